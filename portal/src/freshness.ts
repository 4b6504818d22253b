// The newest stream position this tab has seen a command of its own reach
// the read models with (e.g. a rules change in force). Queries pass it as
// `min_position`, so a page opened afterwards (the dashboard after a rules
// change) is never answered from a read model that has not caught up yet.

let seen = 0n;

/** Notes a position a command of this tab reached (in force in the read model). */
export function noteApplied(position: bigint) {
  if (position > seen) seen = position;
}

/** The position reads should wait for (0 when nothing was changed here). */
export function readAfter(): bigint {
  return seen;
}
