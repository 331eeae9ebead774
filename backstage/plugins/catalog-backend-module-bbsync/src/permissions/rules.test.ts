import { Entity } from '@backstage/catalog-model';
import {
  isBitbucketReader,
  isBitbucketWriter,
  bbsyncConditions,
} from './rules';

const entity = (slug?: string, server?: string): Entity => ({
  apiVersion: 'backstage.io/v1alpha1',
  kind: 'Component',
  metadata: {
    name: 'c',
    annotations: {
      ...(slug ? { 'bitbucket.com/project-slug': slug } : {}),
      ...(server ? { 'bbsync.io/bitbucket-server': server } : {}),
    },
  },
});

describe('bbsync permission rules', () => {
  it('match entities of the listed repositories only', () => {
    const params = { repositories: ['ws/Private-One'] };
    expect(isBitbucketReader.apply(entity('ws/private-one'), params)).toBe(
      true,
    );
    expect(isBitbucketReader.apply(entity('ws/other'), params)).toBe(false);
    expect(isBitbucketReader.apply(entity(), params)).toBe(false);
    expect(
      isBitbucketWriter.apply(entity('ws/other'), { repositories: [] }),
    ).toBe(false);
  });

  it('match Data Center entities by server, project key and slug', () => {
    const params = {
      repositories: ['ws/other', 'bitbucket.example.com/PLAT/api'],
    };
    expect(
      isBitbucketReader.apply(
        entity('PLAT/api', 'bitbucket.example.com'),
        params,
      ),
    ).toBe(true);
    // Another server's PLAT/api, and Cloud's plat/api, are other repositories.
    expect(
      isBitbucketReader.apply(entity('PLAT/api', 'git.other.com'), params),
    ).toBe(false);
    expect(isBitbucketReader.apply(entity('plat/api'), params)).toBe(false);
    expect(
      isBitbucketReader.apply(entity('WS/other', 'bitbucket.example.com'), {
        repositories: ['ws/other'],
      }),
    ).toBe(false);
  });

  it('filter catalog queries on the project-slug annotation', () => {
    expect(isBitbucketWriter.toQuery({ repositories: ['ws/a'] })).toEqual({
      allOf: [
        {
          key: 'metadata.annotations.bitbucket.com/project-slug',
          values: ['ws/a'],
        },
        { not: { key: 'metadata.annotations.bbsync.io/bitbucket-server' } },
      ],
    });
    expect(isBitbucketWriter.toQuery({ repositories: [] })).toEqual({
      key: 'metadata.annotations.bitbucket.com/project-slug',
      values: [],
    });
  });

  it('filter Data Center repositories on the server too', () => {
    expect(
      isBitbucketReader.toQuery({
        repositories: [
          'ws/a',
          'bitbucket.example.com/PLAT/api',
          'Bitbucket.Example.com/PLAT/web',
          'git.other.com:7990/OPS/deploy',
          'not/a/repo/name',
        ],
      }),
    ).toEqual({
      anyOf: [
        {
          allOf: [
            {
              key: 'metadata.annotations.bitbucket.com/project-slug',
              values: ['ws/a'],
            },
            {
              not: { key: 'metadata.annotations.bbsync.io/bitbucket-server' },
            },
          ],
        },
        {
          allOf: [
            {
              key: 'metadata.annotations.bitbucket.com/project-slug',
              values: ['PLAT/api', 'PLAT/web'],
            },
            {
              key: 'metadata.annotations.bbsync.io/bitbucket-server',
              values: ['bitbucket.example.com'],
            },
          ],
        },
        {
          allOf: [
            {
              key: 'metadata.annotations.bitbucket.com/project-slug',
              values: ['OPS/deploy'],
            },
            {
              key: 'metadata.annotations.bbsync.io/bitbucket-server',
              values: ['git.other.com:7990'],
            },
          ],
        },
      ],
    });
  });

  it('make conditions a policy can return', () => {
    expect(
      bbsyncConditions.isBitbucketReader({ repositories: ['ws/a'] }),
    ).toEqual({
      rule: 'IS_BITBUCKET_READER',
      resourceType: 'catalog-entity',
      params: { repositories: ['ws/a'] },
    });
  });
});
