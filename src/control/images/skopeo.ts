/**
 * Skopeo runs Debian's `skopeo` for registry transport and format conversion: every source is copied into a per-import
 * OCI layout (linux/amd64 picked from a multi-platform index). Credentials reach it through a 0600 auth file, a custom
 * CA through a certificate directory, never argv; a signature policy of our own is passed so that the host's
 * /etc/containers configuration does not matter. Its failures map to stable codes.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ImageImportError, type ImageFailureCode } from './image-error.js';
import { skopeoRef, type ImageSource } from './image-ref.js';

/** SkopeoAccess is how to reach a registry: optional credentials and an optional CA (PEM). */
export interface SkopeoAccess {
  credentials?: { username: string; password: string } | undefined;
  caPem?: string | undefined;
}

/** SKOPEO_STDERR_KEPT bounds the stderr kept from one run (the tail says why it failed). */
const SKOPEO_STDERR_KEPT = 64 * 1024;

/** Skopeo runs skopeo for one import, inside its staging directory. */
export class Skopeo {
  private readonly authFile: string | null = null;
  private readonly certDir: string | null = null;
  private readonly policy: string;

  /** constructor writes the policy, the auth file (0600) and the CA into `workDir`, which the caller removes afterwards. */
  constructor(
    private readonly workDir: string,
    private readonly timeoutMs: number,
    registry: string | null,
    access: SkopeoAccess,
  ) {
    this.policy = join(workDir, 'policy.json');
    // Signatures are out of scope; integrity comes from digests, which we verify ourselves as blobs enter the store.
    writeFileSync(this.policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }), { mode: 0o600 });
    if (registry && access.credentials) {
      this.authFile = join(workDir, 'auth.json');
      const auth = Buffer.from(`${access.credentials.username}:${access.credentials.password}`).toString('base64');
      writeFileSync(this.authFile, JSON.stringify({ auths: { [registry]: { auth } } }), { mode: 0o600 });
    }
    if (access.caPem) {
      this.certDir = join(workDir, 'certs');
      mkdirSync(this.certDir, { mode: 0o700 });
      writeFileSync(join(this.certDir, 'ca.crt'), access.caPem, { mode: 0o600 });
    }
  }

  /** inspect reads a registry image's platform and layer sizes (linux/amd64 chosen from an index). */
  async inspect(source: ImageSource): Promise<{ architecture: string; os: string; layerBytes: number | null }> {
    const args = ['inspect', '--override-os', 'linux', '--override-arch', 'amd64', '--retry-times', '0'];
    if (this.authFile) args.push('--authfile', this.authFile);
    else if (source.kind === 'registry') args.push('--no-creds');
    if (this.certDir) args.push('--cert-dir', this.certDir);
    args.push(skopeoRef(source));
    const out = await this.run(args);
    const info = JSON.parse(out) as { Architecture?: string; Os?: string; LayersData?: Array<{ Size?: number }> | null };
    const sizes = (info.LayersData ?? []).map((l) => l.Size ?? -1);
    return { architecture: info.Architecture ?? '', os: info.Os ?? '', layerBytes: sizes.length && sizes.every((n) => n >= 0) ? sizes.reduce((a, b) => a + b, 0) : null };
  }

  /** copy copies the source into an OCI layout at `layoutDir` (tag `image`). */
  async copy(source: ImageSource, layoutDir: string): Promise<void> {
    const args = ['copy', '--override-os', 'linux', '--override-arch', 'amd64', '--retry-times', '0', '--dest-oci-accept-uncompressed-layers', '--quiet'];
    if (this.authFile) args.push('--src-authfile', this.authFile);
    else if (source.kind === 'registry') args.push('--src-no-creds');
    if (this.certDir) args.push('--src-cert-dir', this.certDir);
    args.push(skopeoRef(source), `oci:${layoutDir}:image`);
    await this.run(args);
  }

  private run(args: string[]): Promise<string> {
    return new Promise((resolve, reject) => {
      // HOME and TMPDIR inside the staging directory: skopeo's temporary files (a docker-archive's layers) go with it.
      const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: this.workDir, TMPDIR: this.workDir, XDG_RUNTIME_DIR: this.workDir };
      const child = spawn('skopeo', ['--policy', this.policy, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
      }, this.timeoutMs);
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        if (stdout.length < 4 * 1024 * 1024) stdout += d;
      });
      child.stderr.setEncoding('utf8').on('data', (d: string) => {
        stderr = (stderr + d).slice(-SKOPEO_STDERR_KEPT);
      });
      child.on('error', (e) => {
        clearTimeout(timer);
        reject(new ImageImportError('internal', `skopeo could not be started (${e.message}); install it (apt-get install skopeo)`));
      });
      child.on('close', (code) => {
        clearTimeout(timer);
        if (timedOut) return reject(new ImageImportError('image_import_timeout', `the transfer took longer than ${Math.round(this.timeoutMs / 1000)} s (images.importTimeoutSeconds)`));
        if (code === 0) return resolve(stdout);
        reject(classifySkopeoError(stderr));
      });
    });
  }
}

/** RULES map what skopeo (containers/image) says to a code; the first match wins. */
const RULES: Array<[RegExp, ImageFailureCode, string]> = [
  [/x509:|certificate (signed by unknown|is not valid|has expired)|tls: /i, 'image_tls_failed', "the registry's TLS certificate is not trusted or the handshake failed; pass its CA (caPem, --ca)"],
  [/unauthorized|authentication required|denied: requested access|401 Unauthorized|invalid username\/password/i, 'image_auth_failed', 'the registry refused the credentials'],
  [/digest did not match|does not match (the )?(expected )?digest|Digest did not match|computed digest .* does not match|size mismatch|unexpected EOF|short read/i, 'image_digest_mismatch', 'a blob did not match its digest or size (corrupt or truncated)'],
  [/manifest unknown|name unknown|not found|does not exist|404/i, 'image_not_found', 'no such image at the source'],
  [/connection refused|no such host|no route to host|i\/o timeout|network is unreachable|dial tcp|connection reset|server misbehaving|EOF$/im, 'image_registry_unreachable', 'the registry could not be reached'],
  [/no supported platform|choosing image instance|no image found in (image )?index for architecture/i, 'image_platform_mismatch', 'the image has no linux/amd64 variant'],
  [/invalid tar|archive\/tar|not a (docker|oci)|unexpected|invalid|unsupported|error parsing|unmarshal/i, 'image_invalid', 'the source is not a usable image'],
];

/** classifySkopeoError maps skopeo's stderr to an ImageImportError whose message keeps skopeo's last line. */
export function classifySkopeoError(stderr: string): ImageImportError {
  const detail = stderr.trim().split('\n').filter(Boolean).at(-1)?.replace(/^time=".*?" level=\w+ msg=/, '').slice(0, 1000) ?? 'no message';
  for (const [pattern, code, what] of RULES) if (pattern.test(stderr)) return new ImageImportError(code, `${what}: ${detail}`);
  return new ImageImportError('image_invalid', `skopeo failed: ${detail}`);
}
