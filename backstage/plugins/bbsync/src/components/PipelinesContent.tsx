import {
  EmptyState,
  Link,
  ResponseErrorPanel,
  Table,
  TableColumn,
} from '@backstage/core-components';
import { useApi } from '@backstage/core-plugin-api';
import {
  BBSYNC_NO_DATA_CENTER_PIPELINES,
  BbsyncPipeline,
} from '@bbsync/plugin-bbsync-common';
import Box from '@material-ui/core/Box';
import Typography from '@material-ui/core/Typography';
import useAsync from 'react-use/esm/useAsync';
import { bbsyncApiRef } from '../api';
import { RunPipelineButton } from './RunPipelineButton';
import { RunState } from './RunState';
import {
  age,
  isDataCenter,
  useRepository,
  useRepositoryWebUrl,
} from './useRepository';

/**
 * The repository's recent pipelines, with Run pipeline above them; for a
 * Data Center repository, which has none, an empty state that says so.
 */
export function PipelinesContent() {
  const repo = useRepository();
  if (repo && isDataCenter(repo)) {
    return (
      <EmptyState
        missing="info"
        title={BBSYNC_NO_DATA_CENTER_PIPELINES}
        description="This repository is on Bitbucket Data Center: its builds run in the CI servers that report their statuses to it, shown on the Bitbucket card."
      />
    );
  }
  return <CloudPipelinesContent />;
}

function CloudPipelinesContent() {
  const repo = useRepository();
  const web = useRepositoryWebUrl();
  const api = useApi(bbsyncApiRef);
  const { value, loading, error } = useAsync(async () => {
    if (!repo) return [];
    return (await api.getPipelines(repo, { limit: 50 })).items;
  }, [api, repo?.workspace, repo?.slug]);

  const columns: TableColumn<BbsyncPipeline>[] = [
    {
      title: 'Build',
      field: 'build_number',
      render: p => (
        <Link to={`${web}/pipelines/results/${p.build_number}`}>
          #{p.build_number}
        </Link>
      ),
    },
    { title: 'State', render: p => <RunState pipeline={p} /> },
    { title: 'Trigger', render: p => p.trigger ?? '—' },
    { title: 'Ref', render: p => p.ref_name ?? '—' },
    {
      title: 'Duration',
      render: p =>
        p.duration_seconds === null || p.duration_seconds === undefined
          ? '—'
          : age(p.duration_seconds),
    },
    {
      title: 'Started',
      render: p =>
        p.created_on ? new Date(p.created_on).toLocaleString() : '—',
    },
  ];
  return (
    <>
      <Box mb={2} display="flex" justifyContent="flex-end">
        {repo && <RunPipelineButton repository={repo} />}
      </Box>
      {error ? (
        <ResponseErrorPanel error={error} />
      ) : (
        <Table<BbsyncPipeline>
          title="Pipelines"
          isLoading={loading}
          options={{
            paging: true,
            pageSize: 20,
            search: false,
            padding: 'dense',
          }}
          columns={columns}
          data={value ?? []}
          emptyContent={
            <Typography variant="body2" style={{ padding: 16 }}>
              No pipelines yet.
            </Typography>
          }
        />
      )}
    </>
  );
}
