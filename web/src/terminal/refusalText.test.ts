import { describe, expect, it } from "vitest";
import type { StateDetail } from "./connection";
import { refusalText } from "./TerminalView";

const closed = (reason: string): StateDetail => ({ attempt: 0, delayMs: 0, code: 1008, reason });

describe("refusalText", () => {
  it("says a console sign-out in words, and an unknown reason as it came", () => {
    expect(refusalText(closed("signed-out"))).toBe("You signed out: reload the page to sign in again.");
    expect(refusalText(closed("something-new"))).toBe("Refused: something-new");
  });
});
