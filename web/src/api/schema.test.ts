// @vitest-environment node
/**
 * `schema.d.ts` must be exactly what `npm run gen:api` makes of `openapi.json`, so the
 * type-check really is a check against the server's document and not a stale copy.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { expect, it } from "vitest";

const WEB = resolve(__dirname, "../..");

it("schema.d.ts is generated from openapi.json", () => {
  const dir = mkdtempSync(join(tmpdir(), "gen-api-"));
  try {
    const out = join(dir, "schema.d.ts");
    execFileSync(
      process.execPath,
      [join(WEB, "node_modules/openapi-typescript/bin/cli.js"), join(WEB, "openapi.json"), "-o", out],
      { stdio: "pipe", timeout: 60_000 },
    );
    const committed = readFileSync(join(WEB, "src/api/schema.d.ts"), "utf8");
    expect(committed, "run `npm run gen:api` and commit the result").toBe(readFileSync(out, "utf8"));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, 60_000);
