/**
 * The replay input gate. While xterm.js parses a replay (a snapshot, a resume, or the raw
 * protocol's replay frame) it answers the terminal queries in it (DA1, OSC 11 colour,
 * cursor position…) as if the program had just asked; the program asked long ago and had
 * its answer, so whatever the terminal emits until the replay's write callback must not
 * be typed into it. Live output's queries are answered as usual.
 */
export class ReplayGate {
  private writing = 0;

  /** A replay starts being written; call the returned function from its write callback
   * (calling it more than once counts once). */
  begin(): () => void {
    this.writing += 1;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.writing -= 1;
    };
  }

  /** True while any replay handed to the terminal has not been parsed yet. */
  get closed(): boolean {
    return this.writing > 0;
  }

  /** `send`, except while a replay is being written (then the input is dropped). */
  guard<T>(send: (data: T) => void): (data: T) => void {
    return (data: T) => {
      if (this.writing === 0) send(data);
    };
  }
}
