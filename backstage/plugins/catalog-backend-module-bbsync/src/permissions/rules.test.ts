import { Entity } from '@backstage/catalog-model';
import {
  isBitbucketReader,
  isBitbucketWriter,
  bbsyncConditions,
} from './rules';

const entity = (slug?: string): Entity => ({
  apiVersion: 'backstage.io/v1alpha1',
  kind: 'Component',
  metadata: {
    name: 'c',
    annotations: slug ? { 'bitbucket.com/project-slug': slug } : {},
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

  it('filter catalog queries on the project-slug annotation', () => {
    expect(isBitbucketWriter.toQuery({ repositories: ['ws/a'] })).toEqual({
      key: 'metadata.annotations.bitbucket.com/project-slug',
      values: ['ws/a'],
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
