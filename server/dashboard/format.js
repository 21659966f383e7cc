// Number and time formatting, in one place.

const number = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });

export const DASH = "—";

export function pct(value) {
  if (value === null || value === undefined) return DASH;
  return `${value >= 10 ? integer.format(value) : number.format(value)} %`;
}

export function count(value) {
  return value === null || value === undefined ? DASH : integer.format(value);
}

const RATE_UNITS = ["B/s", "kB/s", "MB/s", "GB/s", "TB/s"];
export function rate(bytesPerSecond) {
  if (bytesPerSecond === null || bytesPerSecond === undefined) return DASH;
  let v = bytesPerSecond;
  let unit = 0;
  while (v >= 1000 && unit < RATE_UNITS.length - 1) {
    v /= 1000;
    unit += 1;
  }
  return `${v >= 100 || unit === 0 ? integer.format(v) : number.format(v)} ${RATE_UNITS[unit]}`;
}

/** Compact axis/tooltip value by unit. */
export function byUnit(value, unit) {
  if (value === null || value === undefined || Number.isNaN(value)) return DASH;
  if (unit === "%") return pct(value);
  if (unit === "B/s") return rate(value);
  if (unit === "/s") return `${number.format(value)}/s`;
  return number.format(value);
}

export function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** "just now", "12 s ago", "4 min ago" … from unix seconds, against `now` (unix seconds). */
export function ago(ts, now) {
  if (ts === null || ts === undefined) return "never";
  const s = now - ts;
  if (s < 5) return "just now";
  return `${duration(s)} ago`;
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
export function when(ts) {
  if (ts === null || ts === undefined) return DASH;
  return dateTime.format(new Date(ts * 1000));
}

export function isoTime(ts) {
  return new Date(ts * 1000).toISOString();
}
