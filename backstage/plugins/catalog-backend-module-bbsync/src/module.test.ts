import { mockServices, startTestBackend } from '@backstage/backend-test-utils';
import { catalogProcessingExtensionPoint } from '@backstage/plugin-catalog-node';
import { catalogModuleBbsync } from './module';
import { BbsyncEntityProvider } from './providers/BbsyncEntityProvider';

describe('catalogModuleBbsync', () => {
  it('registers the provider when catalog.providers.bbsync is configured', async () => {
    const addEntityProvider = jest.fn();
    await startTestBackend({
      extensionPoints: [
        [catalogProcessingExtensionPoint, { addEntityProvider }],
      ],
      features: [
        catalogModuleBbsync,
        mockServices.rootConfig.factory({
          data: {
            catalog: {
              providers: {
                bbsync: {
                  baseUrl: 'http://127.0.0.1:1',
                  token: 't',
                  schedule: {
                    frequency: { seconds: 3 },
                    timeout: { seconds: 30 },
                  },
                },
              },
            },
          },
        }),
      ],
    });
    expect(addEntityProvider).toHaveBeenCalledTimes(1);
    const provider = addEntityProvider.mock.calls[0][0];
    expect(provider).toBeInstanceOf(BbsyncEntityProvider);
    expect(provider.getProviderName()).toBe('bbsync');
  });

  it('registers no provider without configuration', async () => {
    const addEntityProvider = jest.fn();
    await startTestBackend({
      extensionPoints: [
        [catalogProcessingExtensionPoint, { addEntityProvider }],
      ],
      features: [catalogModuleBbsync],
    });
    expect(addEntityProvider).not.toHaveBeenCalled();
  });
});
