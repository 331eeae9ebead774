import {
  EmptyState,
  InfoCard,
  Link,
  Progress,
  ResponseErrorPanel,
  StatusError,
  StatusOK,
  StatusPending,
} from '@backstage/core-components';
import { useApi } from '@backstage/core-plugin-api';
import { BBSYNC_NO_DATA_CENTER_PIPELINES } from '@bbsync/plugin-bbsync-common';
import Box from '@material-ui/core/Box';
import List from '@material-ui/core/List';
import ListItem from '@material-ui/core/ListItem';
import ListItemText from '@material-ui/core/ListItemText';
import Typography from '@material-ui/core/Typography';
import useAsync from 'react-use/esm/useAsync';
import { bbsyncApiRef } from '../api';
import { RunState } from './RunState';
import {
  age,
  isDataCenter,
  secondsSince,
  useRepository,
  useRepositoryWebUrl,
} from './useRepository';

function BuildState({ state }: { state: string }) {
  const upper = state.toUpperCase();
  if (upper === 'SUCCESSFUL') return <StatusOK>{state}</StatusOK>;
  if (upper === 'FAILED' || upper === 'STOPPED')
    return <StatusError>{state}</StatusError>;
  return <StatusPending>{state}</StatusPending>;
}

/** Default-branch build state, last pipelines, statuses and open pull requests. */
export function HealthCard() {
  const repo = useRepository();
  const web = useRepositoryWebUrl();
  const api = useApi(bbsyncApiRef);
  const dataCenter = repo ? isDataCenter(repo) : false;
  const { value, loading, error } = useAsync(async () => {
    if (!repo) return undefined;
    const [health, pipelines, pulls] = await Promise.all([
      api.getHealth(repo),
      // Data Center has no Pipelines: its builds are the statuses on head.
      dataCenter ? { items: [] } : api.getPipelines(repo, { limit: 5 }),
      api.getPullRequests(repo, { states: ['OPEN'], limit: 5 }),
    ]);
    return { health, pipelines: pipelines.items, pulls: pulls.items };
  }, [api, repo?.workspace, repo?.slug, dataCenter]);

  if (!repo) {
    return (
      <EmptyState
        missing="field"
        title="No Bitbucket repository"
        description="Add the bitbucket.com/project-slug annotation to see bbsync's data."
      />
    );
  }
  if (loading) {
    return (
      <InfoCard title="Bitbucket">
        <Progress />
      </InfoCard>
    );
  }
  if (error || !value) {
    return <ResponseErrorPanel error={error ?? new Error('no data')} />;
  }
  const { health, pipelines, pulls } = value;
  return (
    <InfoCard title="Bitbucket" subheader={health.repository}>
      <Typography variant="subtitle2">
        {health.default_branch ?? 'default branch'}
      </Typography>
      {health.builds_on_head.length === 0 ? (
        <Typography variant="body2">
          No builds on the default branch yet.
        </Typography>
      ) : (
        <List dense>
          {health.builds_on_head.map(build => (
            <ListItem key={build.key}>
              <ListItemText
                primary={<BuildState state={build.state} />}
                secondary={build.name ?? build.key}
              />
            </ListItem>
          ))}
        </List>
      )}
      {dataCenter ? (
        <Box mt={2}>
          <Typography variant="subtitle2">Pipelines</Typography>
          <Typography variant="body2">
            {BBSYNC_NO_DATA_CENTER_PIPELINES}: the builds above are the statuses
            its CI servers report.
          </Typography>
          {health.last_build && (
            <Typography variant="body2">
              Last build: {health.last_build.name ?? health.last_build.key}{' '}
              {health.last_build.result ?? ''}
            </Typography>
          )}
        </Box>
      ) : (
        <Box mt={2}>
          <Typography variant="subtitle2">Last pipelines</Typography>
          {pipelines.length === 0 ? (
            <Typography variant="body2">No pipelines yet.</Typography>
          ) : (
            <List dense>
              {pipelines.map(p => (
                <ListItem key={p.uuid}>
                  <ListItemText
                    primary={
                      <Link to={`${web}/pipelines/results/${p.build_number}`}>
                        #{p.build_number} {p.ref_name ?? ''}
                      </Link>
                    }
                    secondary={<RunState pipeline={p} />}
                  />
                </ListItem>
              ))}
            </List>
          )}
          {health.pipeline_success_rate !== null &&
            health.pipeline_success_rate !== undefined && (
              <Typography variant="body2">
                Success rate {Math.round(health.pipeline_success_rate * 100)} %
                over {health.pipeline_runs} runs
              </Typography>
            )}
        </Box>
      )}
      <Box mt={2}>
        <Typography variant="subtitle2">
          Open pull requests ({health.open_pull_requests})
        </Typography>
        {pulls.length === 0 ? (
          <Typography variant="body2">No open pull requests.</Typography>
        ) : (
          <List dense>
            {pulls.map(pr => (
              <ListItem key={pr.id}>
                <ListItemText
                  primary={
                    <Link to={`${web}/pull-requests/${pr.id}`}>
                      #{pr.id} {pr.title}
                    </Link>
                  }
                  secondary={`${pr.author ?? 'unknown'} · ${age(
                    secondsSince(pr.created_on) ?? 0,
                  )} old`}
                />
              </ListItem>
            ))}
          </List>
        )}
      </Box>
    </InfoCard>
  );
}
