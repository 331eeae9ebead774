import { Entity } from '@backstage/catalog-model';
import {
  getBbsyncRepository,
  isBbsyncDataCenter,
  isBbsyncServerHost,
  parseBbsyncWorkspace,
} from './annotations';

const component = (annotations: Record<string, string>): Entity => ({
  apiVersion: 'backstage.io/v1alpha1',
  kind: 'Component',
  metadata: { name: 'repo', annotations },
  spec: {},
});

/** The annotations bbsync's Data Center entity builder writes. */
const dataCenter = (slug = 'PLAT/api', server = 'bitbucket.example.com') =>
  component({
    'bitbucket.com/project-slug': slug,
    'bbsync.io/bitbucket-server': server,
    'backstage.io/source-location': `url:https://${server}/projects/PLAT/repos/api/browse/`,
  });

describe('getBbsyncRepository', () => {
  it('reads a Cloud entity as {workspace}/{slug}', () => {
    const entity = component({ 'bitbucket.com/project-slug': 'ws/repo' });
    expect(getBbsyncRepository(entity)).toEqual({
      workspace: 'ws',
      slug: 'repo',
    });
    expect(isBbsyncDataCenter(entity)).toBe(false);
  });

  it('reads a Data Center entity as {host}/{KEY} and its slug', () => {
    expect(getBbsyncRepository(dataCenter())).toEqual({
      workspace: 'bitbucket.example.com/PLAT',
      slug: 'api',
      server: 'bitbucket.example.com',
    });
    expect(isBbsyncDataCenter(dataCenter())).toBe(true);
  });

  it('keeps a port and lower-cases the host, upper-cases the key', () => {
    expect(
      getBbsyncRepository(dataCenter('plat/api', 'Bitbucket.Example.com:7990')),
    ).toEqual({
      workspace: 'bitbucket.example.com:7990/PLAT',
      slug: 'api',
      server: 'bitbucket.example.com:7990',
    });
  });

  it('reads a personal Data Center project', () => {
    expect(getBbsyncRepository(dataCenter('~ALICE/dotfiles'))?.workspace).toBe(
      'bitbucket.example.com/~ALICE',
    );
  });

  it.each([
    ['no annotation', component({})],
    ['a slug without owner', component({ 'bitbucket.com/project-slug': 'x' })],
    [
      'three parts',
      component({ 'bitbucket.com/project-slug': 'host/KEY/slug' }),
    ],
    ['a traversal slug', component({ 'bitbucket.com/project-slug': 'ws/..' })],
    [
      'a traversal workspace',
      component({ 'bitbucket.com/project-slug': '../x' }),
    ],
    ['a bad host', dataCenter('PLAT/api', 'evil.com/../x')],
    ['a host with a user', dataCenter('PLAT/api', 'me@evil.com')],
    ['a bad port', dataCenter('PLAT/api', 'host:99999')],
    ['a bad key', dataCenter('PL-AT/api')],
    ['a key starting with a digit', dataCenter('1PLAT/api')],
  ])('names no repository for %s', (_why, entity) => {
    expect(getBbsyncRepository(entity)).toBeUndefined();
  });
});

describe('parseBbsyncWorkspace', () => {
  it('tells Cloud from Data Center workspaces', () => {
    expect(parseBbsyncWorkspace('ws')).toEqual({
      kind: 'cloud',
      workspace: 'ws',
    });
    expect(parseBbsyncWorkspace('bitbucket.example.com:7990/PLAT')).toEqual({
      kind: 'datacenter',
      workspace: 'bitbucket.example.com:7990/PLAT',
      host: 'bitbucket.example.com:7990',
      projectKey: 'PLAT',
    });
  });

  it.each([
    '',
    '.',
    '..',
    '../PLAT',
    'host/..',
    'host/PLAT/x',
    'host//PLAT',
    '/PLAT',
    'host/plat',
    'ho st/PLAT',
    'host%2FPLAT',
    '-host/PLAT',
    'host./PLAT',
    'a..b/PLAT',
    'host:0/PLAT',
    'host:/PLAT',
    'user@host/PLAT',
    'host\\PLAT',
    'host?x=1/PLAT',
    'ws#frag',
  ])('refuses %j', workspace => {
    expect(parseBbsyncWorkspace(workspace)).toBeUndefined();
  });
});

describe('isBbsyncServerHost', () => {
  it('takes DNS names with an optional port', () => {
    expect(isBbsyncServerHost('bitbucket.example.com')).toBe(true);
    expect(isBbsyncServerHost('localhost:7990')).toBe(true);
    expect(isBbsyncServerHost('127.0.0.1:7990')).toBe(true);
    expect(isBbsyncServerHost('example.com:65536')).toBe(false);
    expect(isBbsyncServerHost(`${'a'.repeat(64)}.com`)).toBe(false);
  });
});
