export interface Config {
  /** bbsync, read by the bbsync backend plugin (and the permission helpers). */
  bbsync?: {
    /** bbsync's base URL, e.g. https://bbsync.example.com */
    baseUrl: string;
    /**
     * One of bbsync's service tokens (BBSYNC_API_TOKENS). Stays in the backend.
     * @visibility secret
     */
    token: string;
    /** Bitbucket's web URL for links to pipelines (default https://bitbucket.org). */
    webUrl?: string;
  };
}
