/** The one registry of stable error codes the API returns; clients match on `code`, never on text. */

/** ERROR_CODES maps each code to its HTTP status and what it means. */
export const ERROR_CODES = {
  invalid_json: { status: 400, doc: 'The request body is not valid JSON.' },
  invalid_request: { status: 400, doc: 'The request is malformed: a field has the wrong type, is missing, or is unknown.' },
  malformed_request: { status: 400, doc: 'The request is not valid HTTP/1.1: a bad request line, method, header or percent-encoding, contradictory body framing (Content-Length, Transfer-Encoding), or no Host header; after a parse error the connection is closed.' },
  unauthenticated: { status: 401, doc: 'No API key was given, or it is not valid.' },
  forbidden: { status: 403, doc: 'The API key is valid but may not do this.' },
  invalid_token: { status: 401, doc: 'The workload token is malformed, signed by an unknown key, or meant for another audience or issuer.' },
  token_expired: { status: 401, doc: 'The workload token has expired (60 s of clock skew are allowed); read the refreshed token file again.' },
  token_revoked: { status: 401, doc: 'The workload token was revoked: its workload has ended.' },
  out_of_scope: { status: 403, doc: "The credential may not do this to this object: outside the token's scopes." },
  invalid_object_key: { status: 400, doc: 'The object key or prefix is not valid (empty, "..", ".", "//", a leading "/", NUL or control characters, or too long).' },
  not_found: { status: 404, doc: 'No such resource in this workspace.' },
  conflict: { status: 409, doc: 'The resource is in a state that does not allow this (e.g. cancelling a finished job).' },
  already_exists: { status: 409, doc: 'A resource with that name already exists.' },
  limit_exceeded: { status: 422, doc: "A requested resource (cpu, memory, timeout) is outside the workspace's limits." },
  unsupported_runtime: { status: 422, doc: 'The requested runtime is not one of runc, runsc, crun.' },
  runtime_not_offered: { status: 422, doc: "No agent of the fleet (connected or not, not removed) offers the workload's runtime (a job that names none gets limits.defaultRuntime); details.offered lists the runtimes agents offer." },
  size_not_offered: { status: 422, doc: "Agents offer the workload's runtime, but none has a size class that fits its cpu, memory and disk (agent.classes); ask for less." },
  invalid_policy: { status: 422, doc: "The egress policy is not valid (bad CIDR, port, protocol, or a forbidden destination); details.code and details.path say which rule and why. The previous policy stays in force." },
  request_timeout: { status: 408, doc: 'The request did not arrive in time (its headers, its body, or an upload that stalled); the connection is closed.' },
  payload_too_large: { status: 413, doc: 'The request body (or object) is larger than allowed.' },
  quota_exceeded: { status: 429, doc: "A workspace quota is used up (queued jobs, live streams, objects or their bytes); details.quota names it and details.limit its size; Retry-After says when to try again where waiting helps." },
  rate_limited: { status: 429, doc: "The workspace sent more requests per second than its quota allows; Retry-After says when to try again." },
  uri_too_long: { status: 414, doc: 'A path parameter is longer than any identifier can be (100 characters).' },
  headers_too_large: { status: 431, doc: 'The request line and headers together are larger than 16 KiB; the connection is closed.' },
  image_not_found: { status: 404, doc: 'No image of that name[:tag] or digest in this workspace, nor a public one.' },
  image_not_ready: { status: 409, doc: "The image is still being imported (pulling, unpacking) or its import failed; GET /v1/images/:id says which." },
  image_in_use: { status: 409, doc: 'Jobs (or cells) that have not ended use the image; delete it once they end.' },
  image_registry_unreachable: { status: 502, doc: 'Import failure (in the image\'s state, or synchronously): the registry could not be reached (refused, no route, no such host).' },
  image_tls_failed: { status: 502, doc: "Import failure: the registry's TLS certificate is not trusted (pass its CA as caPem / --ca) or the handshake failed." },
  image_auth_failed: { status: 401, doc: 'Import failure: the registry refused the credentials (or asked for some and none were given).' },
  image_digest_mismatch: { status: 422, doc: 'Import failure: a blob did not match its digest or size (corrupt or truncated); nothing was stored.' },
  image_platform_mismatch: { status: 422, doc: 'Import failure: the image is for another platform; only linux/amd64 runs here.' },
  image_invalid: { status: 422, doc: 'Import failure: the source is not a usable image (unknown archive format, bad manifest or config, unsupported media type, too many layers).' },
  image_too_large: { status: 422, doc: 'Import failure: the image is larger than images.maxUnpackedMiB (blobs, or unpacked by the agent), or the archive exceeds images.maxArchiveMiB.' },
  image_import_timeout: { status: 504, doc: 'Import failure: the transfer took longer than images.importTimeoutSeconds.' },
  image_layer_invalid: { status: 422, doc: "Preparation failure (from the agent): a layer entry escapes the layer or is forbidden (../, absolute path, link out of the root, device node, uid ≥ 65536)." },
  image_blob_missing: { status: 422, doc: 'Preparation failure (from the agent): a blob the image names is not in the store.' },
  sandbox_not_running: { status: 409, doc: 'The sandbox is not running: still starting (retry when its state is running) or ended (create a new one).' },
  process_ended: { status: 409, doc: 'The process has exited (or closed its stdin): it takes no more input or signals.' },
  process_start_failed: { status: 422, doc: 'The process could not start: details.reason says why (command_not_found, invalid_cwd, permission_denied, too_many_processes, start_failed).' },
  io_error: { status: 500, doc: "A file operation failed inside the sandbox with an I/O error; the message carries the system's error text." },
  file_exists: { status: 409, doc: 'A file or directory already exists at the destination path.' },
  not_a_directory: { status: 409, doc: 'A component of the path is not a directory.' },
  is_a_directory: { status: 409, doc: 'The path is a directory where a file was expected (read, write): use the list operation, or another path.' },
  permission_denied: { status: 403, doc: "The sandbox's workload user may not do this to that path." },
  invalid_path: { status: 400, doc: 'The path is not valid inside the sandbox: it must be absolute, without NUL bytes, at most 4096 bytes.' },
  no_space: { status: 507, doc: "The sandbox's volume is full (or its file quota used up): delete files or create the sandbox with a larger diskMiB. The sandbox keeps running." },
  internal: { status: 500, doc: 'A platform fault; the message carries a reference for the operator.' },
  unavailable: { status: 503, doc: 'The server is shutting down; retry on a new connection.' },
} as const;

/** ErrorCode is one of the registered codes. */
export type ErrorCode = keyof typeof ERROR_CODES;

/** ApiError is an error that maps to a stable code and an HTTP status. */
export class ApiError extends Error {
  readonly status: number;
  constructor(readonly code: ErrorCode, message: string, readonly details?: unknown) {
    super(message);
    this.status = ERROR_CODES[code].status;
  }
}

/** ErrorBody is the JSON shape of every error response. */
export interface ErrorBody {
  error: { code: ErrorCode; message: string; details?: unknown };
}
