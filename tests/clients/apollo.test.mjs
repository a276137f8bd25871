// Apollo Client 4: a query over HttpLink, automatic persisted queries, BatchHttpLink and a
// subscription through GraphQLWsLink (graphql-ws).
import { createHash } from 'node:crypto';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from '@apollo/client';
import { BatchHttpLink } from '@apollo/client/link/batch-http';
import { createPersistedQueryLink } from '@apollo/client/link/persisted-queries';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { INSTALLATION_ID, STATION_EVENTS, STATION_ID, startServer, withStationEvents } from './server.mjs';

const INSTALLATIONS = gql`
  query Installations {
    installations { id name chargingStations { id friendlyName } }
  }
`;

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.stop(); });

/** A fetch that records each request's body and the parsed answer. */
function recordingFetch() {
  const calls = [];
  const fetchFn = async (input, init) => {
    const res = await fetch(input, init);
    const call = { body: JSON.parse(init.body), status: res.status, answer: await res.clone().json().catch(() => null) };
    calls.push(call);
    return res;
  };
  return { calls, fetch: fetchFn };
}

function client(link) {
  const auth = new ApolloLink((operation, forward) => {
    operation.setContext(({ headers = {} }) => ({ headers: { ...headers, authorization: `Bearer ${server.token}` } }));
    return forward(operation);
  });
  return new ApolloClient({ link: ApolloLink.from([auth, link]), cache: new InMemoryCache() });
}

function assertInstallations(data) {
  const installation = data.installations.find((i) => i.id === INSTALLATION_ID);
  assert.ok(installation, `installation ${INSTALLATION_ID} in ${JSON.stringify(data)}`);
  assert.ok(installation.chargingStations.some((s) => s.id === STATION_ID), 'its charging station');
}

test('Apollo HttpLink: installations and their stations', async () => {
  const apollo = client(new HttpLink({ uri: server.url }));
  const { data } = await apollo.query({ query: INSTALLATIONS, fetchPolicy: 'network-only' });
  assertInstallations(data);
});

test('Apollo persisted queries: hash only, PersistedQueryNotFound, retry with the query, then hash only', async () => {
  const recorder = recordingFetch();
  const sha256 = (query) => createHash('sha256').update(query).digest('hex');
  const link = createPersistedQueryLink({ sha256 }).concat(new HttpLink({ uri: server.url, fetch: recorder.fetch }));
  const apollo = client(link);

  const first = await apollo.query({ query: INSTALLATIONS, fetchPolicy: 'network-only' }).catch((error) => ({ error }));
  assert.ok(recorder.calls.length >= 1, `a request: ${first.error}`);
  const [hashOnly, withQuery] = recorder.calls;
  assert.equal(hashOnly.body.query, undefined, 'the first request sends the hash only');
  assert.match(hashOnly.body.extensions?.persistedQuery?.sha256Hash ?? '', /^[0-9a-f]{64}$/);
  const notFound = hashOnly.answer?.errors?.[0];
  assert.ok(
    notFound?.message === 'PersistedQueryNotFound' || notFound?.extensions?.code === 'PERSISTED_QUERY_NOT_FOUND',
    `the hash alone gets PersistedQueryNotFound, not ${JSON.stringify(hashOnly.answer)}`,
  );
  assert.equal(recorder.calls.length, 2, `two requests the first time: ${JSON.stringify(recorder.calls, null, 1)}`);
  assert.ifError(first.error);
  assertInstallations(first.data);
  assert.equal(typeof withQuery.body.query, 'string', 'the retry sends the query');
  assert.equal(withQuery.body.extensions?.persistedQuery?.sha256Hash, hashOnly.body.extensions.persistedQuery.sha256Hash);

  const second = await apollo.query({ query: INSTALLATIONS, fetchPolicy: 'network-only' });
  assertInstallations(second.data);
  assert.equal(recorder.calls.length, 3, 'one request the second time');
  assert.equal(recorder.calls[2].body.query, undefined, 'the second query sends the hash only');
  assert.equal(recorder.calls[2].answer?.errors, undefined);
});

test('Apollo BatchHttpLink: two queries in one HTTP request', async () => {
  const recorder = recordingFetch();
  const apollo = client(new BatchHttpLink({ uri: server.url, batchMax: 10, batchInterval: 20, fetch: recorder.fetch }));
  const results = await Promise.allSettled([
    apollo.query({ query: INSTALLATIONS, fetchPolicy: 'network-only' }),
    apollo.query({
      query: gql`query Station($id: ID!) { installation(id: $id) { id name } }`,
      variables: { id: INSTALLATION_ID },
      fetchPolicy: 'network-only',
    }),
  ]);
  assert.equal(recorder.calls.length, 1, 'one HTTP request');
  const [call] = recorder.calls;
  assert.ok(Array.isArray(call.body) && call.body.length === 2, 'a batch of two');
  assert.ok(
    Array.isArray(call.answer) && call.answer.length === 2,
    `an array of two answers, not ${call.status} ${JSON.stringify(call.answer)}`,
  );
  const [a, b] = results.map((r) => (r.status === 'fulfilled' ? r.value : assert.fail(r.reason)));
  assertInstallations(a.data);
  assert.equal(b.data.installation.id, INSTALLATION_ID);
});

test('Apollo GraphQLWsLink: stationEvents after a car is plugged in', async () => {
  const ws = createClient({
    url: server.wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: { Authorization: `Bearer ${server.token}` },
    retryAttempts: 0,
  });
  const apollo = new ApolloClient({ link: new GraphQLWsLink(ws), cache: new InMemoryCache() });
  let subscription;
  try {
    const event = await withStationEvents(server.simulator, new Promise((resolve, reject) => {
      subscription = apollo
        .subscribe({ query: gql(STATION_EVENTS), variables: { installationId: INSTALLATION_ID } })
        .subscribe({
          next: (result) => (result.error ? reject(result.error) : resolve(result.data.stationEvents)),
          error: reject,
          complete: () => reject(new Error('the subscription completed without an event')),
        });
    }));
    assert.equal(event.installationId, INSTALLATION_ID);
    assert.equal(event.chargingStationId, STATION_ID);
  } finally {
    subscription?.unsubscribe();
    await ws.dispose();
  }
});
