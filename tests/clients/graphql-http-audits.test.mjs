// graphql-http's server audits (the GraphQL-over-HTTP spec's MUST, SHOULD and MAY), without and
// with a bearer token: every audit must be ok.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { serverAudits } from 'graphql-http';
import { startServer } from './server.mjs';

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.stop(); });

async function audit(fetchFn) {
  const audits = serverAudits({ url: server.url, fetchFn });
  const failed = [];
  for (const { name, fn } of audits) {
    const result = await fn();
    if (result.status !== 'ok') failed.push(`[${result.status}] ${name}: ${result.reason}`);
  }
  const summary = `${audits.length - failed.length} of ${audits.length} audits ok`;
  assert.equal(failed.length, 0, `${summary}; not ok:\n${failed.join('\n')}`);
  console.log(summary);
}

test('graphql-http audits without a token', () => audit(fetch));

test('graphql-http audits with Authorization: Bearer', () =>
  audit((input, init = {}) => {
    const headers = new Headers(init.headers);
    headers.set('authorization', `Bearer ${server.token}`);
    return fetch(input, { ...init, headers });
  }));
