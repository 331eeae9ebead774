// The permission policy shown in the README, type-checked and run here.
import { mockCredentials } from '@backstage/backend-test-utils';
import { Entity } from '@backstage/catalog-model';
import { catalogEntityReadPermission } from '@backstage/plugin-catalog-common/alpha';
import {
  AuthorizeResult,
  isPermission,
  PolicyDecision,
} from '@backstage/plugin-permission-common';
import {
  PermissionPolicy,
  PolicyQuery,
  PolicyQueryUser,
} from '@backstage/plugin-permission-node';
import { BbsyncPermissionsClient } from './BbsyncPermissionsClient';
import { bbsyncConditions, createBbsyncConditionalDecision } from './rules';

// --- README example starts ---
class BbsyncPolicy implements PermissionPolicy {
  constructor(
    private readonly bbsync: BbsyncPermissionsClient,
    private readonly accountOf: (
      userRef: string,
    ) => Promise<string | undefined>,
  ) {}

  async handle(
    request: PolicyQuery,
    user?: PolicyQueryUser,
  ): Promise<PolicyDecision> {
    if (isPermission(request.permission, catalogEntityReadPermission)) {
      const userRef = user?.info.userEntityRef;
      const account = userRef ? await this.accountOf(userRef) : undefined;
      const { read } = account
        ? await this.bbsync.repositoriesOf(account)
        : { read: [] };
      // Entities without a Bitbucket repository stay visible to everyone.
      return createBbsyncConditionalDecision(request.permission, {
        anyOf: [
          {
            not: {
              rule: 'HAS_ANNOTATION',
              resourceType: 'catalog-entity',
              params: { annotation: 'bitbucket.com/project-slug' },
            },
          },
          bbsyncConditions.isBitbucketReader({ repositories: read }),
        ],
      });
    }
    return { result: AuthorizeResult.ALLOW };
  }
}
// --- README example ends ---

describe('the README permission policy', () => {
  it('lets a user read the entities of the repositories bbsync says they may read', async () => {
    const client = new BbsyncPermissionsClient('http://unused', 't');
    jest
      .spyOn(client, 'repositoriesOf')
      .mockResolvedValue({ read: ['ws/private'], write: [] });
    const policy = new BbsyncPolicy(client, async () => 'acc-1');
    const decision = await policy.handle(
      { permission: catalogEntityReadPermission },
      {
        credentials: mockCredentials.user('user:default/ada'),
        info: { userEntityRef: 'user:default/ada', ownershipEntityRefs: [] },
        token: 't',
        expiresInSeconds: 60,
      } as unknown as PolicyQueryUser,
    );
    expect(decision).toMatchObject({
      result: AuthorizeResult.CONDITIONAL,
      conditions: {
        anyOf: [
          expect.anything(),
          {
            rule: 'IS_BITBUCKET_READER',
            params: { repositories: ['ws/private'] },
          },
        ],
      },
    });
    expect(client.repositoriesOf).toHaveBeenCalledWith('acc-1');
  });

  it('hides private repositories from a user bbsync does not know', async () => {
    const client = new BbsyncPermissionsClient('http://unused', 't');
    const policy = new BbsyncPolicy(client, async () => undefined);
    const decision = await policy.handle({
      permission: catalogEntityReadPermission,
    });
    const entity: Entity = {
      apiVersion: 'backstage.io/v1alpha1',
      kind: 'Component',
      metadata: {
        name: 'c',
        annotations: { 'bitbucket.com/project-slug': 'ws/private' },
      },
    };
    expect(decision.result).toBe(AuthorizeResult.CONDITIONAL);
    expect(JSON.stringify(decision)).toContain('"repositories":[]');
    expect(entity.metadata.annotations).toBeDefined();
  });
});
