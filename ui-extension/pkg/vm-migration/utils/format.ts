// How sizes, rates, times left and progress read on the pages.

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

// 1536 → "1.5 KiB": binary units, at most one decimal, none for bytes.
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes) || bytes < 0) {
    return '—';
  }
  let value = bytes;
  let unit = 0;

  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  const text = unit === 0 ? `${ value }` : `${ Math.round(value * 10) / 10 }`;

  return `${ text } ${ UNITS[unit] }`;
}

export function formatRate(bytesPerSecond: number | null | undefined): string {
  if (!bytesPerSecond || bytesPerSecond < 0) {
    return '—';
  }

  return `${ formatBytes(bytesPerSecond) }/s`;
}

// 3725 → "1h 2m", 200 → "3m 20s", 45 → "45s"; unknown → "—".
export function formatEta(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds) || seconds < 0) {
    return '—';
  }
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = s % 60;

  if (h > 0) {
    return `${ h }h ${ m }m`;
  }
  if (m > 0) {
    return `${ m }m ${ rest }s`;
  }

  return `${ rest }s`;
}

// Whole percent of done over total, 0..100; never 100 before done reaches total.
export function percent(done: number | null | undefined, total: number | null | undefined): number {
  if (!total || total <= 0 || !done || done <= 0) {
    return 0;
  }
  if (done >= total) {
    return 100;
  }

  return Math.min(99, Math.floor((done * 100) / total));
}
