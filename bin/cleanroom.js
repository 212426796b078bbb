#!/usr/bin/env node
// cleanroom: the CLI entry point; builds on first use if dist/ is missing.
import { existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const entry = join(root, 'dist/src/cli/main.js');
if (!existsSync(entry)) execFileSync('npm', ['run', '--silent', 'build'], { cwd: root, stdio: 'inherit' });
await import(entry);
