// The Harvester VM name an import derives from the source VM's display name, the
// same way the controller does (crates/api/src/names.rs, target_vm_name): letters
// transliterated from the one shared table, then every other run of characters a
// '-', cut to a DNS-1123 label. The wizard shows it as the default target name.
import transliteration from '../../../../crates/api/src/transliteration.json';

export const MAX_NAME_LEN = 63;

const TABLE: Record<string, string> = transliteration;

function transliterate(text: string): string {
  let out = '';

  for (const c of text) {
    out += TABLE[c] ?? c;
  }

  return out;
}

// Lowercase ASCII letters and digits kept, every other run of characters one '-'.
function slug(text: string): string {
  let out = '';

  for (const c of text) {
    if (/^[A-Za-z0-9]$/.test(c)) {
      out += c.toLowerCase();
    } else if (out && !out.endsWith('-')) {
      out += '-';
    }
  }

  return out;
}

export function targetVmName(displayName: string): string {
  const name = slug(transliterate(displayName)).slice(0, MAX_NAME_LEN).replace(/^-+|-+$/g, '');

  return name || 'vm';
}

export function isDns1123Label(name: string): boolean {
  return name.length > 0 && name.length <= MAX_NAME_LEN && /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(name);
}

// Why `name` cannot be a target VM name, as an l10n key (with its arguments), or
// null when it can.
export function targetNameError(name: string): { key: string, args?: Record<string, any> } | null {
  if (!name) {
    return { key: 'vmMigration.validation.required' };
  }
  if (name.length > MAX_NAME_LEN) {
    return { key: 'vmMigration.validation.tooLong', args: { max: MAX_NAME_LEN } };
  }
  if (!isDns1123Label(name)) {
    return { key: 'vmMigration.validation.dns1123' };
  }

  return null;
}
