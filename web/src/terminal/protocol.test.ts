import { describe, expect, it } from "vitest";
import {
  encodeBinaryFrame,
  parseBinaryFrame,
  parseControl,
  placeFrame,
  withQuery,
} from "./protocol";

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

describe("v2 binary frames", () => {
  it("reads the 8-byte big-endian offset and the payload after it", () => {
    const raw = new Uint8Array([0, 0, 0, 0, 0, 0, 0x01, 0x02, 0x68, 0x69]);
    const frame = parseBinaryFrame(raw.buffer);
    expect(frame?.start).toBe(258);
    expect(text(frame!.payload)).toBe("hi");
  });

  it("reads offsets past 32 bits exactly", () => {
    const start = 2 ** 40 + 12345;
    const frame = parseBinaryFrame(encodeBinaryFrame(start, new TextEncoder().encode("x")));
    expect(frame?.start).toBe(start);
    expect(text(frame!.payload)).toBe("x");
    // the high word really is the high word (big-endian), not the low one
    const bytes = encodeBinaryFrame(2 ** 32, new Uint8Array());
    expect(Array.from(bytes)).toEqual([0, 0, 0, 1, 0, 0, 0, 0]);
  });

  it("takes a frame that is a view into a larger buffer, and an empty payload", () => {
    const big = new Uint8Array(20);
    big.set(encodeBinaryFrame(7, new TextEncoder().encode("ab")), 5);
    const frame = parseBinaryFrame(big.subarray(5, 15));
    expect(frame?.start).toBe(7);
    expect(text(frame!.payload)).toBe("ab");
    expect(parseBinaryFrame(encodeBinaryFrame(9, new Uint8Array()))?.payload.byteLength).toBe(0);
  });

  it("refuses a frame shorter than its header", () => {
    expect(parseBinaryFrame(new Uint8Array([0, 0, 0, 1]).buffer)).toBeNull();
  });
});

describe("v2 controls", () => {
  it("reads hello, snapshot, viewers and activity", () => {
    expect(
      parseControl(
        JSON.stringify({
          type: "hello",
          protocol: "sandbox.v2",
          viewer: "v1",
          mode: "read",
          rows: 40,
          cols: 120,
          window: 65536,
          activity: "waiting",
          title: "qwen",
        }),
      ),
    ).toEqual({
      type: "hello",
      viewer: "v1",
      mode: "read",
      rows: 40,
      cols: 120,
      window: 65536,
      activity: "waiting",
      title: "qwen",
    });
    expect(parseControl('{"type":"snapshot","seq":99,"reason":"gap"}')).toEqual({
      type: "snapshot",
      seq: 99,
      reason: "gap",
    });
    expect(
      parseControl(
        '{"type":"viewers","viewers":[{"id":"a","who":"ann@x.io","mode":"write","you":true},7]}',
      ),
    ).toEqual({
      type: "viewers",
      viewers: [{ id: "a", who: "ann@x.io", mode: "write", you: true }],
    });
    expect(parseControl('{"type":"activity","state":"busy"}')).toEqual({
      type: "activity",
      state: "busy",
    });
    expect(parseControl('{"type":"exit","code":null}')).toEqual({ type: "exit", code: null });
  });

  it("ignores unknown types, unknown states and what is not a JSON object", () => {
    expect(parseControl('{"type":"future-thing"}')).toBeNull();
    expect(parseControl('{"type":"activity","state":"sleepy"}')).toBeNull();
    expect(parseControl("[1,2]")).toBeNull();
    expect(parseControl("not json")).toBeNull();
  });
});

describe("stream bookkeeping", () => {
  it("skips what the viewer already has and keeps what is new", () => {
    expect(placeFrame(null, 0, 5)).toEqual({ skip: 0, end: 5 });
    expect(placeFrame(10, 10, 5)).toEqual({ skip: 0, end: 15 });
    // a frame overlapping a resume: only the new tail is written
    expect(placeFrame(12, 10, 5)).toEqual({ skip: 2, end: 15 });
    // a frame entirely already seen: nothing is written, the offset stays
    expect(placeFrame(20, 10, 5)).toEqual({ skip: 5, end: 20 });
  });

  it("sets query parameters on socket URLs and paths", () => {
    expect(withQuery("ws://h/a/attach?share=t", { since: 42 })).toBe(
      "ws://h/a/attach?share=t&since=42",
    );
    expect(withQuery("ws://h/a/attach?since=1", { since: 9 })).toBe("ws://h/a/attach?since=9");
    expect(withQuery("/a/attach", { share: "x y" })).toBe("/a/attach?share=x+y");
    expect(withQuery("/a/attach?since=3", { since: null })).toBe("/a/attach");
  });
});
