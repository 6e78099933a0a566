import { describe, expect, it } from "vitest";
import { ReplayGate } from "./gate";

describe("ReplayGate", () => {
  it("drops input from the start of a replay's write to its callback, then passes it", () => {
    const gate = new ReplayGate();
    const sent: string[] = [];
    const send = gate.guard((data: string) => sent.push(data));
    send("typed before");
    const done = gate.begin();
    send("\x1b[?1;2c"); // xterm.js answering a DA1 in the replay
    expect(gate.closed).toBe(true);
    done();
    send("typed after");
    expect(sent).toEqual(["typed before", "typed after"]);
  });

  it("stays closed until every overlapping replay is written, and counts a callback once", () => {
    const gate = new ReplayGate();
    const sent: string[] = [];
    const send = gate.guard((data: string) => sent.push(data));
    const first = gate.begin();
    const second = gate.begin();
    first();
    first(); // a repeated callback must not open the gate early
    send("answer to the second replay");
    expect(gate.closed).toBe(true);
    second();
    send("live");
    expect(sent).toEqual(["live"]);
  });
});
