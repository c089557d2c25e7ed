// api/ui/vendor.mjs: copy uPlot's minified build from node_modules (installed by `npm ci` from the pinned
// package-lock.json) into vendor/, which is committed and embedded in celeriac-api with include_str!.
//
//   cd api/ui && npm ci && node vendor.mjs          # rewrite vendor/
//   node vendor.mjs --check                         # exit 1 when vendor/ differs from node_modules
//
// api/tests/dashboard.rs runs the check, so the vendored copy cannot drift from the lockfile.
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const FILES = [
  ["node_modules/uplot/dist/uPlot.iife.min.js", "vendor/uPlot.iife.min.js"],
  ["node_modules/uplot/dist/uPlot.min.css", "vendor/uPlot.min.css"],
];
const check = process.argv.includes("--check");
let stale = 0;
for (const [from, to] of FILES) {
  const src = readFileSync(join(here, from));
  if (check) {
    let dst = null;
    try { dst = readFileSync(join(here, to)); } catch { /* missing */ }
    if (!dst || !src.equals(dst)) {
      console.error(`stale: api/ui/${to} differs from ${from}; run: cd api/ui && npm ci && node vendor.mjs`);
      stale++;
    }
  } else {
    mkdirSync(dirname(join(here, to)), { recursive: true });
    writeFileSync(join(here, to), src);
    console.log(`wrote api/ui/${to} (${src.length} bytes)`);
  }
}
process.exit(stale ? 1 : 0);
