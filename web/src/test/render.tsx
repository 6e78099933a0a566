import { render } from "@testing-library/react";
import type { ReactElement } from "react";
import { ApiContext } from "../api/context";
import type { FakeServer } from "./fakeServer";

export function renderWithApi(ui: ReactElement, server: FakeServer) {
  return render(<ApiContext.Provider value={server.api()}>{ui}</ApiContext.Provider>);
}

export function agent(id: string, overrides: Record<string, unknown> = {}) {
  return {
    id,
    label: id.replace(/(^|-)(\w)/g, (_m, sep: string, c: string) => (sep ? " " : "") + c.toUpperCase()),
    blurb: `${id} blurb`,
    installed: true,
    installHint: "",
    byos: id === "claude-code",
    ...overrides,
  };
}

export function item(id: string, overrides: Record<string, unknown> = {}) {
  return {
    id,
    name: id,
    agent: "aider",
    status: "pending",
    createdAt: "2026-11-27T18:00:00Z",
    repo: "",
    sessions: 0,
    previews: [],
    conditions: [],
    attachUrl: `/api/v1/sandbox/sessions/${id}/attach`,
    ...overrides,
  };
}
