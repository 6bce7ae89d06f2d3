// Errors from the store's requests (steve's or Kubernetes' Status objects, or
// the shell's wrapped responses), told apart and put in words.

// Whether the API refused the user (HTTP 403): the page then says "not allowed"
// instead of failing.
export function isForbidden(err: any): boolean {
  const status = err?._status ?? err?.status ?? err?.code ?? err?.response?.status;

  return Number(status) === 403 || err?.reason === 'Forbidden' || err?.code === 'Forbidden';
}

export function errorMessage(err: any): string {
  if (!err) {
    return '';
  }
  if (typeof err === 'string') {
    return err;
  }

  return err.message || err._statusText || err.statusText || err.reason || JSON.stringify(err);
}
