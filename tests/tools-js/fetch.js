// Fetches a URL through the host's wasi:http (ComponentizeJS `fetch`), to
// check the per-tool allowlist and the SDK's status → error mapping.

import { http, s, tool } from '@cofferdam/guest';

export default tool({
  name: 'fetch',
  version: '0.1.0',
  description: 'Test tool: fetches a URL and returns its status and body.',
  input: s.object({
    url: s.string().describe('The URL to fetch.'),
    checkStatus: s.boolean().default(true).describe('Map unsuccessful statuses to tool errors.'),
  }),
  async run({ url, checkStatus }, ctx) {
    let res = await http.send(url, { headers: { accept: 'application/json' } });
    if (checkStatus) res = http.errorForStatus(res);
    const body = await res.text();
    ctx.logInfo(`${url} answered ${res.status}`);
    return { status: res.status, retryAfter: res.headers.get('retry-after'), body: body.slice(0, 2000) };
  },
});
