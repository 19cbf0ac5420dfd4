// Builds the web companion with esbuild.
//   node build.mjs          -> ../jupyter_secure_storage/bridge/web_static/ (index.html, app.js, app.css)
//   node build.mjs --tests  -> dist-test/*.test.mjs, run by `node --test dist-test/`
// The output folder is generated (gitignored); the wheel build hook (hatch_build.py) runs this.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const tests = process.argv.includes("--tests");

if (tests) {
  const out = join(here, "dist-test");
  rmSync(out, { recursive: true, force: true });
  const entryPoints = readdirSync(join(here, "test"))
    .filter((name) => name.endsWith(".test.ts"))
    .map((name) => join(here, "test", name));
  await build({
    entryPoints,
    outdir: out,
    outExtension: { ".js": ".mjs" },
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    logLevel: "warning",
  });
} else {
  const out = join(here, "..", "jupyter_secure_storage", "bridge", "web_static");
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  await build({
    entryPoints: [join(here, "src", "main.ts")],
    outfile: join(out, "app.js"),
    bundle: true,
    platform: "browser",
    format: "esm",
    target: ["chrome109", "safari16", "firefox115"],
    minify: true,
    sourcemap: false,
    legalComments: "linked",
    logLevel: "warning",
  });
  copyFileSync(join(here, "src", "index.html"), join(out, "index.html"));
  copyFileSync(join(here, "src", "app.css"), join(out, "app.css"));
}
