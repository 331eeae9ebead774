import { isBbsyncAvailable } from './conditions';

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
