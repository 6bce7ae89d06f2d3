import { targetVmName, isDns1123Label, targetNameError } from '../names';

// The same cases as crates/api/src/names.rs (target_names_read_like_the_display_name):
// the wizard must show the name the controller will use.
describe('targetVmName', () => {
  it.each([
    ['Web 01', 'web-01'],
    ['db.prod.example.com', 'db-prod-example-com'],
    ['Ünïcödé-VM €', 'unicode-vm-eur'],
    ['  --Ünïcødé--  ', 'unicode'],
    ['Straße 5 Ærø', 'strasse-5-aero'],
    ['Сервер-01', 'server-01'],
    ['Ωμέγα', 'omega'],
    ['Việt Nam', 'viet-nam'],
    ['名前', 'vm'],
    ['', 'vm'],
  ])('%s → %s', (display, want) => {
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
