import { screen } from "@testing-library/react";
import { useEffect } from "react";
import { describe, expect, it, vi } from "vitest";
import { FakeServer } from "../test/fakeServer";
import { item, renderWithApi } from "../test/render";
import { SessionPage } from "./SessionPage";

// The terminal itself is not under test here: a stand-in that reports a dropped socket.
vi.mock("../terminal/TerminalView", () => ({
  default: function DroppedTerminal({
    onConnectionState,
  }: {
    onConnectionState?: (state: "reconnecting") => void;
  }) {
    useEffect(() => onConnectionState?.("reconnecting"), [onConnectionState]);
    return <div data-testid="terminal-stand-in" />;
  },
}));

const PATH = "/api/v1/sandbox/sessions/box";

describe("SessionPage after the terminal opened", () => {
  it("shows Provisioning failed when the sandbox failed while attached", async () => {
    let gets = 0;
    const s = new FakeServer().on("GET", PATH, () => {
      gets += 1;
      return gets === 1
        ? { status: 200, body: item("box", { phase: "Ready", status: "running" }) }
        : {
            status: 200,
            body: item("box", {
              phase: "Failed",
              status: "failed",
              conditions: [
                { type: "PtyReady", status: "False", reason: "CloneFailed", message: "repo gone" },
              ],
            }),
          };
    });
    renderWithApi(<SessionPage id="box" />, s);
    expect(await screen.findByRole("heading", { name: "Provisioning failed" })).toBeInTheDocument();
    expect(screen.getByRole("button", { name: /Delete \+ retry/ })).toBeInTheDocument();
  });

  it("keeps the terminal when the sandbox is still running", async () => {
    const s = new FakeServer().on("GET", PATH, {
      status: 200,
      body: item("box", { phase: "Ready", status: "running" }),
    });
    renderWithApi(<SessionPage id="box" />, s);
    expect(await screen.findByTestId("terminal-stand-in")).toBeInTheDocument();
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(screen.queryByRole("heading", { name: "Provisioning failed" })).toBeNull();
    expect(s.callsTo("GET", PATH).length).toBeGreaterThanOrEqual(2); // the recheck happened
  });
});
