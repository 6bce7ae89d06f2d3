import { targetVmName, isDns1123Label, targetNameError } from '../names';
import targetNames from '../../../../../crates/api/src/target-names.json';

// The controller's own cases (crates/api/src/names.rs reads the same file): the
// wizard must show the name the controller will use.
describe('targetVmName', () => {
  it.each(targetNames as [string, string][])('%s → %s', (display, want) => {
    expect(targetVmName(display)).toBe(want);
  });

  it('cuts to a label, then trims the trailing dash', () => {
    const long = targetVmName(`${ 'a'.repeat(62) }-x`);

    expect(long).toBe('a'.repeat(62));
    expect(isDns1123Label(long)).toBe(true);
  });
});

describe('targetNameError', () => {
  it('accepts a DNS-1123 label', () => {
    expect(targetNameError('web-01')).toBeNull();
  });

  it.each([
    ['', 'vmMigration.validation.required'],
    ['Web-01', 'vmMigration.validation.dns1123'],
    ['web_01', 'vmMigration.validation.dns1123'],
    ['-web', 'vmMigration.validation.dns1123'],
    ['web-', 'vmMigration.validation.dns1123'],
    ['a'.repeat(64), 'vmMigration.validation.tooLong'],
  ])('rejects %j', (name, key) => {
    expect(targetNameError(name)?.key).toBe(key);
  });
});
