// Formatting for people: times in the browser's zone, sizes, ages.

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'short', day: 'numeric', month: 'short' });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeZone: 'UTC' });

/** "14:05" today, "Tue 3 Dec" earlier. */
export function shortTime(iso) {
  const d = new Date(iso);
  const now = new Date();
  return d.toDateString() === now.toDateString() ? timeFmt.format(d) : dayFmt.format(d);
}

/** "14:05". */
export function clock(iso) {
  return timeFmt.format(new Date(iso));
}

/** Date and time in full. */
export function fullTime(iso) {
  return fullFmt.format(new Date(iso));
}

/** "Today", "Yesterday" or the date, for day separators. */
export function dayLabel(iso) {
  const d = new Date(iso);
  const today = new Date();
  const yesterday = new Date(today);
  yesterday.setDate(today.getDate() - 1);
  if (d.toDateString() === today.toDateString()) return 'Today';
  if (d.toDateString() === yesterday.toDateString()) return 'Yesterday';
  return new Intl.DateTimeFormat(undefined, { dateStyle: 'full' }).format(d);
}

/** A calendar date (YYYY-MM-DD) as written locally, with the age in years. */
export function birthDate(ymd) {
  const [y, m, d] = ymd.split('-').map(Number);
  const born = new Date(Date.UTC(y, m - 1, d));
  const now = new Date();
  let age = now.getUTCFullYear() - y;
  if (now.getUTCMonth() + 1 < m || (now.getUTCMonth() + 1 === m && now.getUTCDate() < d)) age -= 1;
  return `${dateFmt.format(born)} (${age} y)`;
}

/** "2.4 MB". */
export function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KB', 'MB', 'GB'];
  let v = bytes / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** Thousands separators. */
export function count(n) {
  return new Intl.NumberFormat().format(n);
}

export const PRIORITY_LABEL = { routine: 'Routine', urgent: 'Urgent', stat: 'STAT' };

export const ROLE_LABEL = {
  org_admin: 'Administrator',
  clinician: 'Clinician',
  nurse: 'Nurse',
  front_desk: 'Front desk',
  compliance_officer: 'Compliance officer',
};
