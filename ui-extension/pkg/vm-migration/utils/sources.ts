// Sources (source.harvesterhci.io): their kinds, readiness, and the create/edit
// form's rules, including the credentials Secret in the source's namespace
// (docs/decisions.md §8 lists its keys). Secret values the user typed are written
// and never read back into the form.
import { base64Decode, base64Encode } from '@shell/utils/crypto';
import { SOURCE } from '../config/types';

export type SourceKind = 'Vsphere' | 'Openstack' | 'Harvester';
export type TlsMode = 'system' | 'ca' | 'insecure';

// One credential key of the Secret: `secret` ones are never shown back.
interface CredentialField {
  key: string;
  secret: boolean;
  optional?: boolean;
  multiline?: boolean;
}

// Ways a kind can log in; each is a set of Secret keys.
interface AuthMode {
  id: string;
  fields: CredentialField[];
}

interface KindInfo {
  kind: SourceKind;
  type: string;
  endpointPlaceholder: string;
  auth: AuthMode[];
  // Spec fields of this kind besides the connection.
  extra: string[];
}

export const KINDS: Record<SourceKind, KindInfo> = {
  Vsphere: {
    kind:                'Vsphere',
    type:                SOURCE.VSPHERE,
    endpointPlaceholder: 'https://vcenter.example.com/sdk',
    auth:                [{ id: 'password', fields: [{ key: 'username', secret: false }, { key: 'password', secret: true }] }],
    extra:               ['datacenter'],
  },
  Openstack: {
    kind:                'Openstack',
    type:                SOURCE.OPENSTACK,
    endpointPlaceholder: 'https://keystone.example.com:5000/v3',
    auth:                [
      { id: 'applicationCredential', fields: [{ key: 'applicationCredentialId', secret: false }, { key: 'applicationCredentialSecret', secret: true }] },
      {
        id:     'password',
        fields: [{ key: 'username', secret: false }, { key: 'password', secret: true }, {
          key: 'userDomain', secret: false, optional: true
        }]
      },
    ],
    extra: ['region', 'project', 'domain'],
  },
  Harvester: {
    kind:                'Harvester',
    type:                SOURCE.HARVESTER,
    endpointPlaceholder: 'https://harvester.example.com:6443',
    auth:                [
      { id: 'kubeconfig', fields: [{ key: 'kubeconfig', secret: true, multiline: true }] },
      { id: 'token', fields: [{ key: 'token', secret: true }] },
    ],
    extra: [],
  },
};

export function kindOfType(type: string): SourceKind | undefined {
  return (Object.values(KINDS).find((k) => k.type === type))?.kind;
}

// ---------------------------------------------------------------- readiness

export type Readiness = {
  state: 'ready' | 'notReady' | 'checking';
  reason?: string;
  message?: string;
};

// What the Ready condition says, or "checking" while the controller has not yet
// looked at this generation of the source.
export function readiness(source: any): Readiness {
  const ready = (source?.status?.conditions || []).find((c: any) => c.type === 'Ready');
  const generation = source?.metadata?.generation;
  const observed = source?.status?.observedGeneration;

  if (!ready || (generation && observed !== undefined && observed < generation)) {
    return { state: 'checking' };
  }

  return {
    state:   ready.status === 'True' ? 'ready' : 'notReady',
    reason:  ready.reason,
    message: ready.message,
  };
}

// Reasons the controller gives (docs/decisions.md §20) for which the form has a
// field that fixes it: the page points there.
export const FIX_HINTS: Record<string, string> = {
  SecretNotFound:       'vmMigration.sources.fix.credentials',
  SecretUnreadable:     'vmMigration.sources.fix.credentials',
  SecretInvalid:        'vmMigration.sources.fix.credentials',
  AuthenticationFailed: 'vmMigration.sources.fix.credentials',
  InvalidEndpoint:      'vmMigration.sources.fix.endpoint',
  EndpointUnreachable:  'vmMigration.sources.fix.endpoint',
  InvalidCaBundle:      'vmMigration.sources.fix.tls',
  CertificateUntrusted: 'vmMigration.sources.fix.tls',
};

// ---------------------------------------------------------------- the form

export interface SourceForm {
  kind: SourceKind;
  name: string;
  namespace: string;
  endpoint: string;
  tls: TlsMode;
  caBundle: string;
  // Spec fields of the kind (datacenter, region, project, domain).
  extra: Record<string, string>;
  auth: string;
  // Credential values typed in; secret ones start empty when editing.
  credentials: Record<string, string>;
  secretName: string;
}

export function emptyForm(kind: SourceKind, namespace = ''): SourceForm {
  return {
    kind,
    name:        '',
    namespace,
    endpoint:    '',
    tls:         'system',
    caBundle:    '',
    extra:       Object.fromEntries(KINDS[kind].extra.map((f) => [f, ''])),
    auth:        KINDS[kind].auth[0].id,
    credentials: {},
    secretName:  '',
  };
}

// The form for an existing source: its spec, and of its Secret (when the user
// may read it) only the keys that are not secret, to show which account it uses.
export function formFromSource(kind: SourceKind, source: any, secret?: any): SourceForm {
  const spec = source?.spec || {};
  const data = secret?.data || {};
  const info = KINDS[kind];
  const mode = info.auth.find((m) => m.fields.some((f) => !f.optional && data[f.key])) || info.auth[0];
  const credentials: Record<string, string> = {};

  for (const field of mode.fields) {
    if (!field.secret) {
      credentials[field.key] = base64Decode(data[field.key]) || '';
    }
  }

  return {
    kind,
    name:       source?.metadata?.name || '',
    namespace:  source?.metadata?.namespace || '',
    endpoint:   spec.endpoint || '',
    tls:        spec.insecureSkipVerify ? 'insecure' : (spec.caBundle ? 'ca' : 'system'),
    caBundle:   spec.caBundle || '',
    extra:      Object.fromEntries(info.extra.map((f) => [f, spec[f] || ''])),
    auth:       mode.id,
    credentials,
    secretName: spec.credentials?.name || '',
  };
}

export type FieldError = { field: string, key: string, args?: Record<string, any> };

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export function isHttpUrl(text: string): boolean {
  try {
    const url = new URL(text);

    return (url.protocol === 'http:' || url.protocol === 'https:') && !!url.hostname;
  } catch {
    return false;
  }
}

// What is wrong with the form. `existingKeys`: the keys the source's Secret has
// already (editing), so a secret value left empty keeps the stored one.
export function validateForm(form: SourceForm, existingKeys: string[] = []): FieldError[] {
  const errors: FieldError[] = [];
  const mode = KINDS[form.kind].auth.find((m) => m.id === form.auth);

  if (!form.name) {
    errors.push({ field: 'name', key: 'vmMigration.validation.required' });
  } else if (form.name.length > 253 || !DNS1123_SUBDOMAIN.test(form.name)) {
    errors.push({ field: 'name', key: 'vmMigration.validation.dns1123Subdomain' });
  }
  if (!form.namespace) {
    errors.push({ field: 'namespace', key: 'vmMigration.validation.required' });
  }
  if (!form.endpoint) {
    errors.push({ field: 'endpoint', key: 'vmMigration.validation.required' });
  } else if (!isHttpUrl(form.endpoint)) {
    errors.push({ field: 'endpoint', key: 'vmMigration.validation.url', args: { example: KINDS[form.kind].endpointPlaceholder } });
  }
  if (form.tls === 'ca' && !/-----BEGIN CERTIFICATE-----[\s\S]+-----END CERTIFICATE-----/.test(form.caBundle)) {
    errors.push({ field: 'caBundle', key: 'vmMigration.validation.pem' });
  }
  if (!mode) {
    errors.push({ field: 'auth', key: 'vmMigration.validation.required' });

    return errors;
  }
  for (const field of mode.fields) {
    const given = !!form.credentials[field.key];
    const stored = existingKeys.includes(field.key);

    if (!field.optional && !given && !(field.secret && stored)) {
      errors.push({ field: `credentials.${ field.key }`, key: 'vmMigration.validation.required' });
    }
  }

  return errors;
}

// The Secret's name: the one the source names already, else `<source>-credentials`.
export function secretNameFor(form: SourceForm): string {
  return form.secretName || `${ form.name }-credentials`.slice(0, 253);
}

// The source's spec from the form.
export function sourceSpec(form: SourceForm): Record<string, any> {
  const spec: Record<string, any> = {
    endpoint:    form.endpoint.trim(),
    credentials: { name: secretNameFor(form) },
  };

  if (form.tls === 'ca') {
    spec.caBundle = form.caBundle.trim() + '\n';
  } else if (form.tls === 'insecure') {
    spec.insecureSkipVerify = true;
  }
  for (const [field, value] of Object.entries(form.extra)) {
    if (value?.trim()) {
      spec[field] = value.trim();
    }
  }

  return spec;
}

// The Secret's new `data` (base64) from what it holds and what the form says:
// values typed in replace stored ones, secret values left empty are kept, and the
// keys of the kind's other login modes are removed (a Secret says one thing).
export function secretData(form: SourceForm, existing: Record<string, string> = {}): Record<string, string> {
  const info = KINDS[form.kind];
  const mode = info.auth.find((m) => m.id === form.auth) || info.auth[0];
  const ours = new Set(info.auth.flatMap((m) => m.fields.map((f) => f.key)));
  const data: Record<string, string> = {};

  // Keys we do not manage (labels for other tools, say) stay as they are.
  for (const [key, value] of Object.entries(existing)) {
    if (!ours.has(key)) {
      data[key] = value;
    }
  }
  for (const field of mode.fields) {
    const typed = form.credentials[field.key];

    if (typed) {
      data[field.key] = base64Encode(typed);
    } else if (field.secret && existing[field.key]) {
      data[field.key] = existing[field.key];
    }
  }

  return data;
}
