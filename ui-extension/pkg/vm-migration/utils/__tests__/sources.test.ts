import {
  emptyForm, formFromSource, validateForm, sourceSpec, secretData, secretNameFor, readiness, kindOfType, FIX_HINTS
} from '../sources';

const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
const CA = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----';

function vsphere(overrides: any = {}) {
  return {
    ...emptyForm('Vsphere', 'team-a'),
    name:        'dc-east',
    endpoint:    'https://vcenter.example.com/sdk',
    credentials: { username: 'admin@vsphere.local', password: 's3cret' },
    ...overrides,
  };
}

describe('validateForm', () => {
  it('accepts a complete vSphere source', () => {
    expect(validateForm(vsphere())).toEqual([]);
  });

  it('names each missing or malformed field', () => {
    const errors = validateForm({
      ...emptyForm('Vsphere', ''), name: 'DC East', endpoint: 'vcenter:443', tls: 'ca', caBundle: 'not a pem'
    });
    const byField = Object.fromEntries(errors.map((e) => [e.field, e.key]));

    expect(byField).toEqual({
      name:                   'vmMigration.validation.dns1123Subdomain',
      namespace:              'vmMigration.validation.required',
      endpoint:               'vmMigration.validation.url',
      caBundle:               'vmMigration.validation.pem',
      'credentials.username': 'vmMigration.validation.required',
      'credentials.password': 'vmMigration.validation.required',
    });
  });

  it('gives an example URL of the kind', () => {
    const [error] = validateForm(vsphere({ endpoint: 'ftp://vcenter' }));

    expect(error.args.example).toBe('https://vcenter.example.com/sdk');
  });

  it('keeps a stored password when editing leaves it empty', () => {
    const form = vsphere({ credentials: { username: 'admin@vsphere.local' } });

    expect(validateForm(form, ['username', 'password'])).toEqual([]);
    expect(validateForm(form, ['username'])).toEqual([{ field: 'credentials.password', key: 'vmMigration.validation.required' }]);
  });

  it('checks the OpenStack login the user chose', () => {
    const form = {
      ...emptyForm('Openstack', 'ns'), name: 'cloud', endpoint: 'https://keystone:5000/v3', auth: 'password', credentials: { username: 'u' }
    };

    expect(validateForm(form).map((e) => e.field)).toEqual(['credentials.password']);
    form.auth = 'applicationCredential';
    expect(validateForm(form).map((e) => e.field)).toEqual(['credentials.applicationCredentialId', 'credentials.applicationCredentialSecret']);
  });
});

describe('sourceSpec', () => {
  it('references the Secret by name only (same namespace) and carries the TLS choice', () => {
    expect(sourceSpec(vsphere({ tls: 'ca', caBundle: CA, extra: { datacenter: ' DC0 ' } }))).toEqual({
      endpoint:    'https://vcenter.example.com/sdk',
      credentials: { name: 'dc-east-credentials' },
      caBundle:    `${ CA }\n`,
      datacenter:  'DC0',
    });
    expect(sourceSpec(vsphere({ tls: 'insecure' })).insecureSkipVerify).toBe(true);
    expect(sourceSpec(vsphere({ tls: 'system', caBundle: CA })).caBundle).toBeUndefined();
  });

  it('keeps the Secret an existing source names', () => {
    expect(secretNameFor(vsphere({ secretName: 'vc-creds' }))).toBe('vc-creds');
  });
});

describe('secretData', () => {
  it('writes what was typed', () => {
    expect(secretData(vsphere())).toEqual({ username: b64('admin@vsphere.local'), password: b64('s3cret') });
  });

  it('keeps a stored password the form left empty, and keys it does not manage', () => {
    const existing = { username: b64('old'), password: b64('kept'), note: b64('other tool') };

    expect(secretData(vsphere({ credentials: { username: 'new' } }), existing)).toEqual({
      username: b64('new'), password: b64('kept'), note: b64('other tool')
    });
  });

  it('drops the keys of the login mode not chosen', () => {
    const form = { ...emptyForm('Harvester', 'ns'), auth: 'token', credentials: { token: 'abc' } };

    expect(secretData(form, { kubeconfig: b64('old'), token: b64('t0') })).toEqual({ token: b64('abc') });
  });

  it('encodes non-ASCII text as UTF-8', () => {
    expect(secretData(vsphere({ credentials: { username: 'jürgen', password: 'pässwörd€' } }))).toEqual({
      username: b64('jürgen'), password: b64('pässwörd€')
    });
  });
});

describe('formFromSource', () => {
  const source = {
    metadata: { name: 'dc-east', namespace: 'team-a' },
    spec:     {
      endpoint: 'https://vc/sdk', credentials: { name: 'vc-creds' }, caBundle: CA, datacenter: 'DC0'
    },
  };

  it('never reads a password back', () => {
    const form = formFromSource('Vsphere', source, { data: { username: b64('admin'), password: b64('s3cret') } });

    expect(form.credentials).toEqual({ username: 'admin' });
    expect(JSON.stringify(form)).not.toContain('s3cret');
    expect(form).toMatchObject({
      name: 'dc-east', namespace: 'team-a', tls: 'ca', secretName: 'vc-creds', extra: { datacenter: 'DC0' }
    });
  });

  it('picks the login mode the Secret holds', () => {
    const form = formFromSource('Harvester', { metadata: {}, spec: { insecureSkipVerify: true } }, { data: { token: b64('t') } });

    expect(form.auth).toBe('token');
    expect(form.tls).toBe('insecure');
    expect(form.credentials).toEqual({});
  });

  it('works without read access to the Secret', () => {
    expect(formFromSource('Vsphere', source).credentials).toEqual({ username: '' });
  });
});

describe('readiness', () => {
  const source = (status: any, generation = 1) => ({ metadata: { generation }, status });

  it('reads the Ready condition with its reason and message', () => {
    expect(readiness(source({ observedGeneration: 1, conditions: [{ type: 'Ready', status: 'True', reason: 'Connected' }] })).state).toBe('ready');
    expect(readiness(source({
      observedGeneration: 1,
      conditions:         [{
        type: 'Ready', status: 'False', reason: 'CertificateUntrusted', message: 'set spec.caBundle'
      }]
    }))).toEqual({
      state: 'notReady', reason: 'CertificateUntrusted', message: 'set spec.caBundle'
    });
  });

  it('is checking until the controller saw this generation', () => {
    expect(readiness(source(undefined)).state).toBe('checking');
    expect(readiness(source({ observedGeneration: 1, conditions: [{ type: 'Ready', status: 'True' }] }, 2)).state).toBe('checking');
  });

  it('points failures the form can fix at the field', () => {
    expect(FIX_HINTS.CertificateUntrusted).toBe('vmMigration.sources.fix.tls');
    expect(FIX_HINTS.AuthenticationFailed).toBe('vmMigration.sources.fix.credentials');
  });
});

describe('kindOfType', () => {
  it('maps steve types to kinds', () => {
    expect(kindOfType('source.harvesterhci.io.openstack')).toBe('Openstack');
    expect(kindOfType('secret')).toBeUndefined();
  });
});
