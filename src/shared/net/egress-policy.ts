// Egress allow-list validation (pure, no schema library): turns untrusted input into a normalised EgressPolicy or a coded error.
// Semantics: default deny; each rule allows a destination CIDR, optionally narrowed to a protocol and a port or port range.
// A port without a protocol means tcp. Forbidden destinations (loopback, link-local/metadata, multicast, the cell pool...)
// stay denied even under 0.0.0.0/0; a rule lying entirely inside one of them is refused outright as a mistake.
import { cidrContains, formatCidr, FORBIDDEN_DESTINATIONS, parseCidr, type Cidr } from './ipv4.js';

/** EgressProtocol is what a rule may name; `any` matches every IPv4 protocol. */
export type EgressProtocol = 'tcp' | 'udp' | 'icmp' | 'any';

/** EgressRule is one normalised allow-list entry (canonical CIDR; ports only for tcp/udp). */
export interface EgressRule {
  readonly cidr: string;
  readonly protocol: EgressProtocol;
  readonly ports?: { readonly from: number; readonly to: number };
}

/** EgressPolicy is a cell's egress allow-list; with dryRun everything is allowed and would-be denials are recorded. */
export interface EgressPolicy {
  readonly allow: readonly EgressRule[];
  readonly dryRun: boolean;
}

/** EgressPolicyErrorCode lists the stable validation failure codes. */
export type EgressPolicyErrorCode =
  | 'INVALID_POLICY'
  | 'TOO_MANY_RULES'
  | 'INVALID_CIDR'
  | 'NON_CANONICAL_CIDR'
  | 'FORBIDDEN_DESTINATION'
  | 'INVALID_PROTOCOL'
  | 'INVALID_PORT'
  | 'PORT_NOT_ALLOWED';

/** EgressPolicyError describes the first problem found, with the path of the offending field. */
export interface EgressPolicyError {
  readonly code: EgressPolicyErrorCode;
  readonly path: string;
  readonly message: string;
}

/** ValidationResult is either the normalised policy or the first error. */
export type ValidationResult = { ok: true; policy: EgressPolicy } | { ok: false; error: EgressPolicyError };

/** MAX_EGRESS_RULES bounds a policy so one cell's rule chain stays short. */
export const MAX_EGRESS_RULES = 256;

const PROTOCOLS: readonly EgressProtocol[] = ['tcp', 'udp', 'icmp', 'any'];

/** validateEgressPolicy checks `{ allow: [{ cidr, protocol?, port? }], dryRun? }`; `poolCidr` adds the cell pool to the forbidden set. */
export function validateEgressPolicy(input: unknown, options: { poolCidr?: Cidr } = {}): ValidationResult {
  const fail = (code: EgressPolicyErrorCode, path: string, message: string): ValidationResult => ({ ok: false, error: { code, path, message } });
  if (!isRecord(input)) return fail('INVALID_POLICY', '', 'policy must be an object');
  const unknownKey = Object.keys(input).find((k) => k !== 'allow' && k !== 'dryRun');
  if (unknownKey) return fail('INVALID_POLICY', unknownKey, `unknown field ${unknownKey}`);
  const { allow = [], dryRun = false } = input;
  if (typeof dryRun !== 'boolean') return fail('INVALID_POLICY', 'dryRun', 'dryRun must be a boolean');
  if (!Array.isArray(allow)) return fail('INVALID_POLICY', 'allow', 'allow must be an array');
  if (allow.length > MAX_EGRESS_RULES) return fail('TOO_MANY_RULES', 'allow', `at most ${MAX_EGRESS_RULES} rules`);
  const forbidden = options.poolCidr ? [...FORBIDDEN_DESTINATIONS, options.poolCidr] : FORBIDDEN_DESTINATIONS;
  const rules: EgressRule[] = [];
  for (const [i, raw] of allow.entries()) {
    const result = validateRule(raw, `allow[${i}]`, forbidden);
    if ('code' in result) return { ok: false, error: result };
    rules.push(result);
  }
  return { ok: true, policy: { allow: rules, dryRun } };
}

function validateRule(raw: unknown, path: string, forbidden: readonly Cidr[]): EgressRule | EgressPolicyError {
  const err = (code: EgressPolicyErrorCode, field: string, message: string): EgressPolicyError => ({ code, path: `${path}${field}`, message });
  if (!isRecord(raw)) return err('INVALID_POLICY', '', 'rule must be an object');
  const unknownKey = Object.keys(raw).find((k) => k !== 'cidr' && k !== 'protocol' && k !== 'port');
  if (unknownKey) return err('INVALID_POLICY', `.${unknownKey}`, `unknown field ${unknownKey}`);
  if (typeof raw.cidr !== 'string') return err('INVALID_CIDR', '.cidr', 'cidr must be a string like 203.0.113.0/24');
  const parsed = parseCidr(raw.cidr);
  if (!parsed) return err('INVALID_CIDR', '.cidr', `${raw.cidr} is not an IPv4 address or CIDR`);
  if (!parsed.canonical) return err('NON_CANONICAL_CIDR', '.cidr', `${raw.cidr} has host bits set; did you mean ${formatCidr(parsed.cidr)}?`);
  const blocked = forbidden.find((f) => cidrContains(f, parsed.cidr));
  if (blocked) return err('FORBIDDEN_DESTINATION', '.cidr', `${raw.cidr} lies inside ${formatCidr(blocked)}, which cells may never reach`);
  const cidr = formatCidr(parsed.cidr);
  let protocol: EgressProtocol;
  if (raw.protocol === undefined) protocol = raw.port === undefined ? 'any' : 'tcp';
  else if (typeof raw.protocol === 'string' && (PROTOCOLS as readonly string[]).includes(raw.protocol)) protocol = raw.protocol as EgressProtocol;
  else return err('INVALID_PROTOCOL', '.protocol', `protocol must be one of ${PROTOCOLS.join(', ')}`);
  if (raw.port === undefined) return { cidr, protocol };
  if (protocol !== 'tcp' && protocol !== 'udp') return err('PORT_NOT_ALLOWED', '.port', `a port needs protocol tcp or udp, not ${protocol}`);
  const ports = parsePorts(raw.port);
  if (!ports) return err('INVALID_PORT', '.port', 'port must be 1-65535 or a range "from-to" with from <= to');
  return { cidr, protocol, ports };
}

function parsePorts(raw: unknown): { from: number; to: number } | undefined {
  const valid = (n: number): boolean => Number.isInteger(n) && n >= 1 && n <= 65535;
  if (typeof raw === 'number') return valid(raw) ? { from: raw, to: raw } : undefined;
  if (typeof raw !== 'string') return undefined;
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(raw);
  if (!m) return undefined;
  const from = Number(m[1]);
  const to = m[2] === undefined ? from : Number(m[2]);
  return valid(from) && valid(to) && from <= to ? { from, to } : undefined;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
