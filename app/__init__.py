"""bbsync: keeps a Backstage catalog in step with Bitbucket Cloud."""
