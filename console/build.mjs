// Builds the console into the directory the broker embeds
// (crates/broker/src/admin/console/): app.js bundled and minified by
// esbuild (deterministic: the same sources give the same bytes, which the
// test suite checks against the committed bundle), index.html and app.css
// copied as they are.
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] ?? join(here, "..", "crates", "broker", "src", "admin", "console");
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(here, "src", "app.ts")],
  outfile: join(out, "app.js"),
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020"],
  legalComments: "none",
  charset: "utf8",
  logLevel: "warning",
});
copyFileSync(join(here, "src", "index.html"), join(out, "index.html"));
copyFileSync(join(here, "src", "app.css"), join(out, "app.css"));
