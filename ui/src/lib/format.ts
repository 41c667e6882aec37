// How numbers read in the window (UI.md): sizes in KB/MB/GB, durations as "3 min 20 s", money
// with two decimals and the currency, counts with thousands separators, times relative with the
// exact time kept for the hover title.

const SIZE_UNITS = ["KB", "MB", "GB", "TB"] as const;

/** 812 B, 4.2 KB, 31.5 MB, 1.20 GB (powers of 1024). */
export function bytes(n: number): string {
  if (!Number.isFinite(n) || n < 0) return "–";
  if (n < 1024) return `${Math.round(n)} B`;
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < SIZE_UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit >= 2 ? 2 : 1;
  return `${value.toFixed(digits)} ${SIZE_UNITS[unit]}`;
}

/** 2.3 MB/s. */
export function rate(bytesPerSecond: number): string {
  if (!Number.isFinite(bytesPerSecond) || bytesPerSecond <= 0) return "–";
  return `${bytes(bytesPerSecond)}/s`;
}

/** 45 s, 3 min 20 s, 2 h 5 min. */
export function duration(seconds: number | null | undefined): string {
  if (seconds == null || !Number.isFinite(seconds) || seconds < 0) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  const minutes = Math.floor(s / 60);
  if (minutes < 60) {
    const rest = s % 60;
    return rest ? `${minutes} min ${rest} s` : `${minutes} min`;
  }
  const hours = Math.floor(minutes / 60);
  const rest = minutes % 60;
  return rest ? `${hours} h ${rest} min` : `${hours} h`;
}

/** 12,345. */
export function count(n: number | null | undefined): string {
  if (n == null || !Number.isFinite(n)) return "–";
  return Math.round(n).toLocaleString("en-US");
}

/** $3.41 USD. */
export function money(amount: number | null | undefined, currency = "USD"): string {
  if (amount == null || !Number.isFinite(amount)) return "–";
  return `$${amount.toFixed(2)} ${currency}`;
}

/** "just now", "2 min ago", "3 h ago", "yesterday", "5 days ago", then the date. */
export function relative(iso: string | null | undefined, now: Date = new Date()): string {
  if (!iso) return "never";
  const then = new Date(iso);
  const seconds = (now.getTime() - then.getTime()) / 1000;
  if (!Number.isFinite(seconds)) return "–";
  if (seconds < 45) return "just now";
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.round(minutes / 60);
  if (hours < 24) return `${hours} h ago`;
  const days = Math.round(hours / 24);
  if (days === 1) return "yesterday";
  if (days < 30) return `${days} days ago`;
  return then.toISOString().slice(0, 10);
}

/** The exact time, for a title attribute. */
export function exact(iso: string | null | undefined): string {
  if (!iso) return "";
  return new Date(iso).toLocaleString();
}

/** "1 error", "3 errors". */
export function plural(n: number, noun: string, nouns = `${noun}s`): string {
  return `${count(n)} ${n === 1 ? noun : nouns}`;
}

/** Where a job trained, from the worker's name for its backend, to follow "ran on". */
export function trainedOn(backend: string | null | undefined, attempt?: number | null): string {
  const where =
    backend === "candle"
      ? "the worker's CPU (candle)"
      : backend === "ray"
        ? "a Ray cluster"
        : backend === "fake-remote"
          ? "a simulated GPU provider"
          : backend === "scripted"
            ? "a scripted trainer (tests)"
            : backend ?? "–";
  return attempt && attempt > 1 ? `${where}, attempt ${attempt}` : where;
}
