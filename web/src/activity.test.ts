import { afterEach, describe, expect, it, vi } from "vitest";
import { activityTitle, notifyWaiting, shouldNotify } from "./activity";

afterEach(() => vi.unstubAllGlobals());

describe("activity in the tab title", () => {
  it("leads with the state, so a row of tabs shows which session needs you", () => {
    expect(activityTitle("fix-tests", "waiting")).toBe("● waiting — fix-tests");
    expect(activityTitle("fix-tests", "busy")).toBe("◐ busy — fix-tests");
    expect(activityTitle("fix-tests", "idle")).toBe("○ idle — fix-tests");
    // an older server reports nothing: the plain name
    expect(activityTitle("fix-tests", null)).toBe("fix-tests");
  });
});

describe("waiting notifications", () => {
  it("fire on the change into waiting while the page is hidden, not otherwise", () => {
    expect(shouldNotify("busy", "waiting", true)).toBe(true);
    expect(shouldNotify("idle", "waiting", true)).toBe(true);
    expect(shouldNotify("busy", "waiting", false)).toBe(false); // in view: the title says it
    expect(shouldNotify("waiting", "waiting", true)).toBe(false); // no repeat
    expect(shouldNotify("waiting", "idle", true)).toBe(false);
    // the first state a page learns is not a change (a reload must not notify)
    expect(shouldNotify(null, "waiting", true)).toBe(false);
  });

  it("raise a notification only when permission was granted", () => {
    const made: { title: string; tag?: string }[] = [];
    class FakeNotification {
      static permission = "denied";
      onclick: (() => void) | null = null;
      constructor(title: string, options: { tag?: string }) {
        made.push({ title, tag: options.tag });
      }
      close() {}
    }
    vi.stubGlobal("Notification", FakeNotification);
    notifyWaiting("fix-tests", "box");
    expect(made).toEqual([]);
    FakeNotification.permission = "granted";
    notifyWaiting("fix-tests", "box");
    expect(made).toEqual([{ title: "fix-tests is waiting for input", tag: "sandbox-waiting-box" }]);
  });
});
