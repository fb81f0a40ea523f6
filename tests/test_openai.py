"""The OpenAI-compatible routes, driven by the real `openai` package against `chadgpt serve` on loopback."""
import json, threading
import httpx, pytest
from conftest import Server, chadgpt, TINY

openai = pytest.importorskip('openai')

@pytest.fixture(scope='module')
def served(tmp_path_factory, shakespeare):
    "A server with a tiny model `t` and its chat version `t-chat` (taught one answer), behind an API key, one generation slot."
    home = tmp_path_factory.mktemp('openai-home')
    (home/'data').mkdir()
    (home/'data'/'tinyshakespeare.txt').write_text(shakespeare.read_text())
    assert chadgpt('train', '--name', 't', *TINY, '--max-iters', 20, home=home).returncode == 0
    conv = {'messages': [{'role': 'user', 'content': 'Who are you?'}, {'role': 'assistant', 'content': 'A player.'}]}
    (home/'data'/'talk.jsonl').write_text((json.dumps(conv) + '\n') * 20)
    r = chadgpt('sft', 't', '--data', 'talk.jsonl', '--name', 't-chat', '--max-iters', 80, '--learning-rate', 3e-3, '--batch-size', 8,
                '--eval-interval', 40, '--eval-iters', 2, '--quiet', home=home)
    assert r.returncode == 0, r.stderr
    s = Server(home, '--max-generations', 1, env={'CHADGPT_API_KEY': 'sk-test'})
    yield s
    s.stop()

def client(s, key='sk-test'):
    return openai.OpenAI(base_url=s.url + '/v1', api_key=key, max_retries=0, timeout=60)

def test_models_and_completions(served):
    c = client(served)
    assert sorted(m.id for m in c.models.list()) == ['t', 't-chat']
    r = c.completions.create(model='t', prompt='ROMEO:', max_tokens=30, seed=3, n=2, temperature=0.9)
    assert r.object == 'text_completion' and [ch.index for ch in r.choices] == [0, 1]
    assert all(len(ch.text) == 30 and ch.finish_reason == 'length' for ch in r.choices)       # characters: one token each
    assert r.usage.prompt_tokens == 2 * 6 and r.usage.completion_tokens == 60 and r.usage.total_tokens == 72
    again = c.completions.create(model='t', prompt='ROMEO:', max_tokens=30, seed=3, n=2, temperature=0.9)
    assert [ch.text for ch in again.choices] == [ch.text for ch in r.choices]                # a seed repeats
    alone = [c.completions.create(model='t', prompt='ROMEO:', max_tokens=30, seed=s, temperature=0.9).choices[0].text for s in (3, 4)]
    assert [ch.text for ch in r.choices] == alone              # choice i is seeded seed + i: made together, as made alone
    streamed, ends = ['', ''], {}                              # streamed, the two choices' chunks come as they are made
    for p in c.completions.create(model='t', prompt='ROMEO:', max_tokens=30, seed=3, n=2, temperature=0.9, stream=True):
        for ch in p.choices:
            streamed[ch.index] += ch.text
            if ch.finish_reason: ends[ch.index] = ch.finish_reason
    assert streamed == alone and ends == {0: 'length', 1: 'length'}
    greedy = served.client.get('/lm/t/eval', params={'tokens': 30, 'prompt': 'ROMEO:', 'temperature': 0}).json()['eval']
    assert c.completions.create(model='t', prompt='ROMEO:', max_tokens=30, temperature=0).choices[0].text == greedy
    stop = greedy[5:7]
    r = c.completions.create(model='t', prompt='ROMEO:', max_tokens=30, temperature=0, stop=[stop, 'zzz'])
    assert r.choices[0].text == greedy[:greedy.index(stop)] and r.choices[0].finish_reason == 'stop'
    pieces = list(c.completions.create(model='t', prompt='ROMEO:', max_tokens=30, temperature=0, stream=True, stop=stop))
    assert ''.join(p.choices[0].text for p in pieces) == greedy[:greedy.index(stop)] and pieces[-1].choices[0].finish_reason == 'stop'

def test_chat_completions(served):
    c = client(served)
    msgs = [{'role': 'user', 'content': 'Who are you?'}]
    r = c.chat.completions.create(model='t-chat', messages=msgs, temperature=0)
    assert r.object == 'chat.completion' and r.choices[0].message.role == 'assistant'
    assert r.choices[0].message.content == 'A player.' and r.choices[0].finish_reason == 'stop'
    assert r.usage.completion_tokens == len('A player.') and r.usage.prompt_tokens == len('Who are you?') + 4   # bos, user start and end, assistant start
    chunks = list(c.chat.completions.create(model='t-chat', messages=msgs, temperature=0, stream=True))
    assert {ch.object for ch in chunks} == {'chat.completion.chunk'} and chunks[0].choices[0].delta.role == 'assistant'
    assert ''.join(ch.choices[0].delta.content or '' for ch in chunks) == 'A player.' and chunks[-1].choices[0].finish_reason == 'stop'
    r = c.chat.completions.create(model='t-chat', messages=msgs, temperature=0, max_tokens=3)
    assert (r.choices[0].message.content, r.choices[0].finish_reason) == ('A p', 'length')
    with httpx.stream('POST', served.url + '/v1/chat/completions', headers={'Authorization': 'Bearer sk-test'},
                      json={'model': 't-chat', 'messages': msgs, 'temperature': 0, 'stream': True}) as s:
        lines = [l for l in s.iter_lines() if l]
    assert lines[-1] == 'data: [DONE]'

def test_the_sdk_exceptions(served):
    c = client(served)
    msgs = [{'role': 'user', 'content': 'Hi'}]
    cases = [(lambda: c.chat.completions.create(model='nosuch', messages=msgs), openai.NotFoundError, 'model_not_found'),
             (lambda: c.chat.completions.create(model='t', messages=msgs), openai.BadRequestError, 'no chat format'),
             (lambda: c.chat.completions.create(model='t-chat', messages=[{'role': 'tool', 'content': 'x'}]), openai.BadRequestError, 'unknown role'),
             (lambda: c.completions.create(model='t', prompt='x', max_tokens=10_001), openai.BadRequestError, 'max_tokens'),
             (lambda: c.completions.create(model='t', prompt='caf\u00e9', max_tokens=3), openai.BadRequestError, "character '\u00e9'"),
             (lambda: c.completions.create(model='../t', prompt='x'), openai.BadRequestError, 'invalid model name'),
             (lambda: client(served, 'wrong').completions.create(model='t', prompt='x'), openai.AuthenticationError, 'invalid_api_key')]
    for call, kind, words in cases:
        with pytest.raises(kind) as e: call()
        body = e.value.body
        assert set(body) == {'message', 'type', 'param', 'code'} and words in json.dumps(body, ensure_ascii=False), body
    r = httpx.post(served.url + '/v1/completions', json={'model': 't', 'prompt': 'x'})          # no key at all
    assert r.status_code == 401 and r.json()['error']['type'] == 'authentication_error'

def test_a_full_house_is_a_rate_limit(served):
    "The one generation slot is held by a stream that is not read: the next request is a 429, RateLimitError in the SDK."
    c = client(served)
    held = c.completions.create(model='t', prompt='ROMEO:', max_tokens=10_000, stream=True)
    try:
        next(iter(held))
        with pytest.raises(openai.RateLimitError) as e: c.completions.create(model='t', prompt='x', max_tokens=2)
        assert e.value.body['code'] == 'rate_limit_exceeded'
    finally: held.close()
    for _ in range(50):                                    # the slot comes back once the stream is closed
        try: c.completions.create(model='t', prompt='x', max_tokens=2); break
        except openai.RateLimitError: threading.Event().wait(0.1)
    else: pytest.fail("the slot never came back")

def test_newer_fields_clients_send(served):
    "`max_completion_tokens` (OpenAI's newer name) and `stream_options.include_usage`, as current clients send them."
    c = client(served)
    msgs = [{'role': 'user', 'content': 'Who are you?'}]
    r = c.chat.completions.create(model='t-chat', messages=msgs, temperature=0, max_completion_tokens=3)
    assert (r.choices[0].message.content, r.choices[0].finish_reason) == ('A p', 'length')
    chunks = list(c.chat.completions.create(model='t-chat', messages=msgs, temperature=0, stream=True,
                                            stream_options={'include_usage': True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len('A player.')
    assert ''.join(ch.choices[0].delta.content or '' for ch in chunks[:-1]) == 'A player.'
    r = c.chat.completions.create(model='t-chat', messages=msgs, temperature=0, presence_penalty=0.5, user='me')
    assert r.choices[0].message.content == 'A player.'                             # fields chadgpt has no use for: ignored
