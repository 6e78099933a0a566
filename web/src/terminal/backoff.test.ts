import { describe, expect, it } from "vitest";
import { BACKOFF_SECONDS, attachSocketUrl, backoffDelayMs } from "./backoff";
import { applyCtrl, rowKeySequence } from "./keys";

describe("back-off", () => {
  it("follows 1, 2, 4, 8, 16, 30 s and stays at 30 s", () => {
    expect(BACKOFF_SECONDS).toEqual([1, 2, 4, 8, 16, 30]);
    const delays = Array.from({ length: 9 }, (_, i) => backoffDelayMs(i) / 1000);
    expect(delays).toEqual([1, 2, 4, 8, 16, 30, 30, 30, 30]);
  });
});

describe("attachSocketUrl", () => {
  it("uses the page host and ws/wss by scheme", () => {
    const path = "/api/v1/sandbox/sessions/box/attach";
    expect(attachSocketUrl(path, { protocol: "http:", host: "127.0.0.1:8080" })).toBe(
      "ws://127.0.0.1:8080/api/v1/sandbox/sessions/box/attach",
    );
    expect(attachSocketUrl(path, { protocol: "https:", host: "sandbox.example" })).toBe(
      "wss://sandbox.example/api/v1/sandbox/sessions/box/attach",
    );
    expect(attachSocketUrl("wss://other/x", { protocol: "http:", host: "h" })).toBe("wss://other/x");
  });
});

describe("key row", () => {
  it("maps keys to terminal sequences", () => {
    expect(rowKeySequence("Esc", false)).toBe("\x1b");
    expect(rowKeySequence("Tab", false)).toBe("\t");
    expect(rowKeySequence("Up", false)).toBe("\x1b[A");
    expect(rowKeySequence("Left", true)).toBe("\x1bOD");
  });

  it("applies a sticky Ctrl to the next key", () => {
    expect(applyCtrl("c")).toBe("\x03");
    expect(applyCtrl("C")).toBe("\x03");
    expect(applyCtrl("[")).toBe("\x1b");
    expect(applyCtrl(" ")).toBe("\x00");
    expect(applyCtrl("1")).toBe("1");
    expect(applyCtrl("paste")).toBe("paste");
  });
});
