import { isBbsyncAvailable, isBbsyncPipelinesAvailable } from './conditions';

describe('isBbsyncAvailable', () => {
  it('needs the project-slug annotation', () => {
    const entity = (annotations: Record<string, string>) => ({
      apiVersion: 'backstage.io/v1alpha1',
      kind: 'Component',
      metadata: { name: 'c', annotations },
    });
    expect(
      isBbsyncAvailable(entity({ 'bitbucket.com/project-slug': 'ws/r' })),
    ).toBe(true);
    expect(isBbsyncAvailable(entity({}))).toBe(false);
  });
});

describe('isBbsyncPipelinesAvailable', () => {
  const entity = (annotations: Record<string, string>) => ({
    apiVersion: 'backstage.io/v1alpha1',
    kind: 'Component',
    metadata: { name: 'c', annotations },
  });

  it('is true for Cloud repositories only', () => {
    expect(
      isBbsyncPipelinesAvailable(
        entity({ 'bitbucket.com/project-slug': 'ws/r' }),
      ),
    ).toBe(true);
    expect(
      isBbsyncPipelinesAvailable(
        entity({
          'bitbucket.com/project-slug': 'PLAT/r',
          'bbsync.io/bitbucket-server': 'bitbucket.example.com',
        }),
      ),
    ).toBe(false);
    expect(isBbsyncPipelinesAvailable(entity({}))).toBe(false);
  });
});
