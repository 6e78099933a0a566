/** Copy a link for the user; without a clipboard API (plain http on a LAN address) select
 * it in its input instead. Returns what to tell the user. */
export async function copyOrSelect(text: string, input: HTMLInputElement | null): Promise<string> {
  try {
    await navigator.clipboard.writeText(text);
    return "Copied.";
  } catch {
    input?.focus();
    input?.select();
    return "Selected: press Ctrl+C (⌘C) to copy.";
  }
}
