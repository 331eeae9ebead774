import {
  Link,
  ResponseErrorPanel,
  Table,
  TableColumn,
} from '@backstage/core-components';
import { useApi } from '@backstage/core-plugin-api';
import {
  BbsyncPullRequest,
  BbsyncPullRequestState,
} from '@bbsync/plugin-bbsync-common';
import MenuItem from '@material-ui/core/MenuItem';
import TextField from '@material-ui/core/TextField';
import Typography from '@material-ui/core/Typography';
import { useState } from 'react';
import useAsync from 'react-use/esm/useAsync';
import { bbsyncApiRef } from '../api';
import {
  age,
  secondsSince,
  useRepository,
  useRepositoryWebUrl,
} from './useRepository';

const STATES: BbsyncPullRequestState[] = [
  'OPEN',
  'MERGED',
  'DECLINED',
  'SUPERSEDED',
];

function reviewers(pr: BbsyncPullRequest): string {
  const people =
    pr.reviewers?.participants?.filter(p => p.role === 'REVIEWER') ?? [];
  const named = people.length
    ? people
    : (pr.reviewers?.reviewers ?? []).map(r => ({ ...r, approved: false }));
  if (named.length === 0) return '—';
  const approvals = people.filter(p => p.approved).length;
  const names = named.map(p => p.display_name ?? p.nickname ?? '?').join(', ');
  return `${names} (${approvals} approved)`;
}

/** The repository's pull requests in a table, filtered by state. */
export function PullRequestsContent() {
  const repo = useRepository();
  const web = useRepositoryWebUrl();
  const api = useApi(bbsyncApiRef);
  const [state, setState] = useState<BbsyncPullRequestState | 'ALL'>('OPEN');
  const { value, loading, error } = useAsync(async () => {
    if (!repo) return [];
    const page = await api.getPullRequests(repo, {
      states: state === 'ALL' ? undefined : [state],
    });
    return page.items;
  }, [api, repo?.workspace, repo?.slug, state]);

  if (error) {
    return <ResponseErrorPanel error={error} />;
  }
  const columns: TableColumn<BbsyncPullRequest>[] = [
    {
      title: 'Pull request',
      field: 'title',
      render: pr => (
        <Link to={`${web}/pull-requests/${pr.id}`}>
          #{pr.id} {pr.title}
        </Link>
      ),
    },
    { title: 'State', field: 'state' },
    { title: 'Author', field: 'author', render: pr => pr.author ?? '—' },
    { title: 'Reviewers', render: pr => reviewers(pr) },
    {
      title: 'Age',
      render: pr => {
        const seconds = secondsSince(pr.created_on);
        return seconds === undefined ? '—' : age(seconds);
      },
    },
    {
      title: 'Branches',
      render: pr =>
        `${pr.source_branch ?? '?'} → ${pr.destination_branch ?? '?'}`,
    },
  ];
  return (
    <Table<BbsyncPullRequest>
      title="Pull requests"
      isLoading={loading}
      options={{ paging: true, pageSize: 20, search: true, padding: 'dense' }}
      columns={columns}
      data={value ?? []}
      actions={[
        {
          icon: () => (
            <TextField
              select
              size="small"
              label="State"
              value={state}
              onChange={e =>
                setState(e.target.value as BbsyncPullRequestState | 'ALL')
              }
              inputProps={{ 'aria-label': 'State' }}
            >
              {[...STATES, 'ALL'].map(s => (
                <MenuItem key={s} value={s}>
                  {s}
                </MenuItem>
              ))}
            </TextField>
          ),
          isFreeAction: true,
          onClick: () => {},
          tooltip: 'Filter by state',
        },
      ]}
      emptyContent={
        <Typography variant="body2" style={{ padding: 16 }}>
          No {state === 'ALL' ? '' : `${state.toLowerCase()} `}pull requests.
        </Typography>
      }
    />
  );
}
