/**
 * The one cross-process primitive alerts need: "this alert, for this key and window, has been
 * sent". A store that offers it (optional capability `alerts`) lets several processes sharing it
 * send each alert once; without it, each process sends its own.
 */

/** A claim on a named alert, until it expires. */
export interface AlertClaim {
  /**
   * What is claimed, such as `error_rate:<keyId>:<day>:<threshold>`: printable, at most 512
   * characters. Names are compared as exact strings.
   */
  name: string;
  /** When the claim lapses and the name may be claimed again. Later than `now`. */
  expiresAt: Date;
  /** The caller's clock: a claim whose `expiresAt` is at or before this has lapsed. */
  now: Date;
}
