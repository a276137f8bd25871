// What a browser on another origin does before Apollo Client's or urql's first request: a CORS
// preflight (witty-bff runs here with WITTY_BFF_CORS_ORIGINS=*).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startServer } from './server.mjs';

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.stop(); });

test('CORS preflight from another origin, then the request', async () => {
  const origin = 'http://app.example.test';
  const preflight = await fetch(server.url, {
    method: 'OPTIONS',
    headers: {
      origin,
      'access-control-request-method': 'POST',
      'access-control-request-headers': 'authorization,content-type',
    },
  });
  assert.ok(preflight.ok, `the preflight answered ${preflight.status}`);
  assert.ok(['*', origin].includes(preflight.headers.get('access-control-allow-origin')), 'Access-Control-Allow-Origin');
  const allowed = (preflight.headers.get('access-control-allow-headers') ?? '').toLowerCase();
  assert.ok(allowed === '*' || ['authorization', 'content-type'].every((h) => allowed.includes(h)), `allowed headers: ${allowed}`);

  const res = await fetch(server.url, {
    method: 'POST',
    headers: { origin, 'content-type': 'application/json', authorization: `Bearer ${server.token}` },
    body: JSON.stringify({ query: '{ installations { id } }' }),
  });
  assert.equal(res.status, 200);
  assert.ok(['*', origin].includes(res.headers.get('access-control-allow-origin')), 'Access-Control-Allow-Origin on the answer');
});
