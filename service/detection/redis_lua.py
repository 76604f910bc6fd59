"""The Lua of ``RedisDetectionStore``: one call judges, indexes and escalates a request.

KEYS: 1 the caller's stats hash, 2 its flag window (sorted set), 3 the request's reply (its
token), then ``B`` bucket hashes of the model, current first. A bucket hash holds the exact
index (``e<digest>``), the near-duplicate index (``n<key>``), both ``-> packed ids``, and stored
answers (``a<seq>``). All keys carry the caller's hash tag, so one call touches one cluster slot.

ARGV: 1 the policy, space-separated: now, B, bucket ttl, stats ttl, ids per key, near
threshold, repeat allowance, flag window, throttle after, suspend after, throttle seconds,
escalate (0/1), store answers (0/1), reply ttl; 2 the model; 3 n; then per image: the exact
digest, the near keys concatenated (8 bytes each), the answer. (Few arguments: packing them is
the client's largest cost.)

Returns ``{refused, retry_after, state, v1...}``; each verdict is ``{seq, layer, matched,
cached}`` (``layer`` "" when unflagged, ``matched`` 0 when none, ``cached`` "" when none).
Ids are packed little-endian uint32 (``struct``), four bytes each. The reply is kept (msgpack)
under KEYS[3] for the reply ttl: the client retries a call whose connection failed, and a call
that did run must not run again (it would index the images twice, and each then matches itself).
"""

POLICY_LUA = r"""
local p = {}
for v in string.gmatch(ARGV[1], '%S+') do table.insert(p, tonumber(v)) end
"""

# Count, over the buckets, the stored ids of each distinct key of ``blob`` (8-byte keys, fields
# prefixed 'n'); returns the fields, the current bucket's values, and the best id and count.
# An older bucket that does not exist is not read (one EXISTS per bucket and call, where an
# HMGET of every key of every image would find nothing); the current one, which the call
# writes, always is.
NEAREST_LUA = r"""
local older_exists = {}
local function live(key, b)
  if b == 1 then return true end
  if older_exists[key] == nil then older_exists[key] = redis.call('EXISTS', key) == 1 end
  return older_exists[key]
end

local function nearest(blob, nb, key_of)
  local fields, seen = {}, {}
  for j = 1, #blob, 8 do
    local key = 'n' .. string.sub(blob, j, j + 7)
    if not seen[key] then
      seen[key] = true
      table.insert(fields, key)
    end
  end
  local counts, best, best_count, current = {}, 0, 0, {}
  if #fields == 0 then return fields, current, best, best_count end
  for b = 1, nb do
    local found = {}
    if live(key_of(b), b) then found = redis.call('HMGET', key_of(b), unpack(fields)) end
    if b == 1 then current = found end
    for f = 1, #fields do
      local ids = found[f]
      if ids then
        for o = 1, #ids, 4 do
          local id = struct.unpack('<I4', ids, o)
          local c = (counts[id] or 0) + 1
          counts[id] = c
          if c > best_count or (c == best_count and id > best) then best, best_count = id, c end
        end
      end
    end
  end
  return fields, current, best, best_count
end

local function append_all(key, fields, current, packed, cap, keep_first)
  local updates = {}
  for f = 1, #fields do
    local ids = current[f] or ''
    if #ids >= cap * 4 then
      if keep_first then ids = string.sub(ids, 1, 4) .. string.sub(ids, 9)
      else ids = string.sub(ids, 5) end
    end
    table.insert(updates, fields[f])
    table.insert(updates, ids .. packed)
  end
  if #updates > 0 then redis.call('HSET', key, unpack(updates)) end
end
"""

OBSERVE_LUA = (
    POLICY_LUA
    + NEAREST_LUA
    + r"""
local now, nb, bucket_ttl, stats_ttl, cap = p[1], p[2], p[3], p[4], p[5]
local near_threshold, allowance, flag_window = p[6], p[7], p[8]
local throttle_after, suspend_after, throttle_s = p[9], p[10], p[11]
local escalate, store_answers, reply_ttl = p[12] == 1, p[13] == 1, p[14]
local model, n = ARGV[2], tonumber(ARGV[3])
local stats, window, once = KEYS[1], KEYS[2], KEYS[3]
local function bucket(b) return KEYS[3 + b] end
local kept = redis.call('GET', once)
if kept then return cmsgpack.unpack(kept) end

local held = redis.call('HMGET', stats, 'state', 'until')
local state, until_ = held[1] or 'ok', tonumber(held[2] or '0')
if escalate then
  if state == 'suspended' then return {'suspended', '0', state} end
  if state == 'throttled' and until_ > now then
    return {'throttled', tostring(until_ - now), state}
  end
end

local out = {'', '0', state}
local flagged = 0
local pos = 4
local first_seq = redis.call('HINCRBY', stats, 'seq', n) - n  -- the images' ids, in order
for i = 1, n do
  local has_exact = #ARGV[pos] > 0  -- empty: the exact layer is off
  local exact, near_blob, answer = 'e' .. ARGV[pos], ARGV[pos + 1], ARGV[pos + 2]
  pos = pos + 3
  local seq = first_seq + i
  local packed = struct.pack('<I4', seq)
  local layer, matched, copies, current_copies = '', 0, 0, false
  for b = 1, has_exact and nb or 0 do
    local ids = false
    if live(bucket(b), b) then ids = redis.call('HGET', bucket(b), exact) end
    if ids then
      copies = copies + #ids / 4
      matched = struct.unpack('<I4', ids, 1)
      if b == 1 then current_copies = ids end
    end
  end
  if copies > 0 then
    if copies > allowance then layer = 'exact' end
  else
    local fields, current, best, best_count = nearest(near_blob, nb, bucket)
    if best_count > near_threshold then layer, matched = 'near', best end
    append_all(bucket(1), fields, current, packed, cap, false)
  end
  if has_exact then append_all(bucket(1), {exact}, {current_copies}, packed, cap, true) end
  local cached = ''
  if matched > 0 then
    local field = 'a' .. matched
    for b = 1, nb do
      local a = redis.call('HGET', bucket(b), field)
      if a then cached = a break end
    end
  end
  if store_answers and copies == 0 then redis.call('HSET', bucket(1), 'a' .. seq, answer) end
  if layer ~= '' then
    flagged = flagged + 1
    redis.call('HINCRBY', stats, 'flags:' .. model .. ':' .. layer, 1)
    redis.call('HSETNX', stats, 'first_flag', seq)
    redis.call('ZADD', window, now, seq .. ':' .. model)
  end
  table.insert(out, {seq, layer, matched, cached})
end

redis.call('EXPIRE', bucket(1), bucket_ttl)
local in_window = 0
if flagged > 0 then  -- the window changes only with a flag (and expires as a whole)
  redis.call('ZREMRANGEBYSCORE', window, '-inf', now - flag_window)
  in_window = redis.call('ZCARD', window)
end
if escalate and flagged > 0 then
  if in_window >= suspend_after then
    state = 'suspended'
    redis.call('HSET', stats, 'state', state)
  elseif in_window >= throttle_after then
    state = 'throttled'
    redis.call('HSET', stats, 'state', state, 'until', tostring(now + throttle_s))
  end
end
if state == 'suspended' then
  redis.call('PERSIST', stats)
  redis.call('PERSIST', window)
else
  redis.call('EXPIRE', stats, stats_ttl)
  redis.call('EXPIRE', window, math.max(stats_ttl, math.ceil(flag_window)))
end
out[3] = state
redis.call('SET', once, cmsgpack.pack(out), 'EX', reply_ttl)
return out
"""
)

# The cross-caller index (shadow only), under one shared hash tag. KEYS: 1 the index's meta
# hash (``seq``), then B bucket hashes (``n<key> -> packed ids``, ``o<id> -> caller``), current
# first. ARGV: 1 the policy: B, bucket ttl, ids per key, near threshold; 2 the caller; 3 n; then
# per image its near keys concatenated. Returns, per image, the other caller whose query it
# near-duplicates, or "".
SHARED_LUA = (
    POLICY_LUA
    + NEAREST_LUA
    + r"""
local nb, bucket_ttl, cap, near_threshold = p[1], p[2], p[3], p[4]
local caller, n = ARGV[2], tonumber(ARGV[3])
local function bucket(b) return KEYS[1 + b] end
local out = {}
for i = 1, n do
  local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  local fields, current, best, best_count = nearest(ARGV[3 + i], nb, bucket)
  local owner = ''
  if best_count > near_threshold then
    for b = 1, nb do
      local o = redis.call('HGET', bucket(b), 'o' .. best)
      if o then owner = o break end
    end
  end
  if owner == caller then owner = '' end
  table.insert(out, owner)
  append_all(bucket(1), fields, current, struct.pack('<I4', seq), cap, false)
  redis.call('HSET', bucket(1), 'o' .. seq, caller)
end
redis.call('EXPIRE', bucket(1), bucket_ttl)
redis.call('EXPIRE', KEYS[1], bucket_ttl)
return out
"""
)
