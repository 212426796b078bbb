/** How the CLI states an egress policy in one line (used by `jobs get`). */
import type { EgressPolicy } from '../sdk/client.js';

/** policySummary describes a policy in one line, e.g. `allow 203.0.113.0/24 tcp:443; deny the rest`. */
export function policySummary(p: EgressPolicy): string {
  const rules = p.allow.map((r) => `${r.cidr} ${r.protocol ?? 'any'}${r.port === undefined ? '' : `:${r.port}`}`);
  const text = rules.length ? `allow ${rules.join(', ')}; deny the rest` : 'deny all';
  return p.dryRun ? `${text} (dry-run: nothing blocked, would-be denials recorded)` : text;
}
