"""The catalog phase of a full sync, and the read of one repository a push asks for.

- `phase`: `CatalogSync`, the run itself: what it reads, in which batches, its checkpoints,
  its resumption after a pause, and one repository's refresh from start to end.
- `changed`: which repositories need a look (their `updated_on` or default-branch head moved
  since their catalog files were read) and where their files are (search or probe).
- `search`: finding catalog files with Bitbucket's code search.
- `files`: fetching a repository's catalog files (ETags, files Bitbucket keeps failing).
- `apply`: a fetched file parsed and its entities written; the generated component.
- `groups`: a Group per Bitbucket project with live repositories.
- `sweep`: entities of repositories gone from Bitbucket leave the catalog, guarded.
"""
