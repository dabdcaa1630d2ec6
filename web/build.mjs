// Bundles web/src into the two scripts the service serves, each one self-contained file:
//   static/chat-widget.js            the widget (src/chat-widget.js, with marked inside)
//   static/dashboard/dashboard.js    the dashboard's script (src/dashboard.js)
// `node build.mjs` writes them; `node build.mjs --check` exits 1 if either differs from what
// the sources build (tests/test_web_build.py runs it, so a committed file never goes stale).
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));
const OUTPUTS = {
  "src/chat-widget.js": "../static/chat-widget.js",
  "src/dashboard.js": "../static/dashboard/dashboard.js",
};
const BANNER = "/* Built by web/build.mjs from web/src; edit the sources there, then run `npm run build` in web/. */";

async function bundle(entry) {
  const result = await build({
    entryPoints: [path.join(here, entry)],
    bundle: true,
    write: false,
    format: "iife",
    target: "es2020",
    minify: true,
    legalComments: "inline", // marked's copyright and MIT notice stay in the served file
    banner: { js: BANNER },
    charset: "utf8",
  });
  return result.outputFiles[0].text;
}

const check = process.argv.includes("--check");
let stale = 0;
for (const [entry, output] of Object.entries(OUTPUTS)) {
  const target = path.join(here, output);
  const built = await bundle(entry);
  if (!check) {
    await writeFile(target, built);
    console.log(`${path.relative(process.cwd(), target)}: ${Buffer.byteLength(built)} bytes`);
  } else if ((await readFile(target, "utf8").catch(() => "")) !== built) {
    console.error(`${path.relative(process.cwd(), target)} is not what ${entry} builds: run \`npm run build\` in web/`);
    stale += 1;
  }
}
process.exit(stale ? 1 : 0);
