import {
  formatBytes, formatRate, formatEta, percent
} from '../format';
import { isForbidden, errorMessage } from '../errors';

describe('formatBytes', () => {
  it.each([
    [0, '0 B'],
    [1023, '1023 B'],
    [1536, '1.5 KiB'],
    [512 * 1024 * 1024, '512 MiB'],
    [10 * 1024 ** 3, '10 GiB'],
    [1.25 * 1024 ** 4, '1.3 TiB'],
  ])('%d → %s', (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
  });

  it('has no size for missing or bad input', () => {
    expect(formatBytes(undefined)).toBe('—');
    expect(formatBytes(-1)).toBe('—');
    expect(formatBytes(Number.NaN)).toBe('—');
  });
});

describe('formatRate', () => {
  it('is a size per second, or nothing while unknown', () => {
    expect(formatRate(32 * 1024 * 1024)).toBe('32 MiB/s');
    expect(formatRate(0)).toBe('—');
    expect(formatRate(null)).toBe('—');
  });
});

describe('formatEta', () => {
  it.each([
    [0, '0s'],
    [45, '45s'],
    [200, '3m 20s'],
    [3725, '1h 2m'],
    [90061, '25h 1m'],
  ])('%d s → %s', (seconds, text) => {
    expect(formatEta(seconds)).toBe(text);
  });

  it('is unknown without a rate', () => {
    expect(formatEta(undefined)).toBe('—');
    expect(formatEta(-5)).toBe('—');
  });
});

describe('percent', () => {
  it('floors, and reaches 100 only when done', () => {
    expect(percent(0, 100)).toBe(0);
    expect(percent(1, 3)).toBe(33);
    expect(percent(999, 1000)).toBe(99);
    expect(percent(1000, 1000)).toBe(100);
    expect(percent(5, 0)).toBe(0);
    expect(percent(undefined, 10)).toBe(0);
  });
});

describe('errors', () => {
  it('tells a 403 from other failures, however the store wrapped it', () => {
    expect(isForbidden({ _status: 403 })).toBe(true);
    expect(isForbidden({ status: 403 })).toBe(true);
    expect(isForbidden({ code: 'Forbidden', status: 'Failure' })).toBe(true);
    expect(isForbidden({ reason: 'Forbidden' })).toBe(true);
    expect(isForbidden({ _status: 404 })).toBe(false);
    expect(isForbidden(undefined)).toBe(false);
  });

  it('puts an error in words', () => {
    expect(errorMessage('boom')).toBe('boom');
    expect(errorMessage({ message: 'secrets is forbidden' })).toBe('secrets is forbidden');
    expect(errorMessage({ _statusText: 'Not Found' })).toBe('Not Found');
    expect(errorMessage(null)).toBe('');
  });
});
