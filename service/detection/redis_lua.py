"""The Lua of ``RedisDetectionStore``: one call judges, indexes and escalates a request.

KEYS: 1 the caller's stats hash, 2 its flag window (sorted set), then ``B`` exact-index buckets,
``B`` near-index buckets and ``B`` answer buckets, current bucket first. All carry the caller's
hash tag, so one call touches one cluster slot.

ARGV: now, B, bucket ttl, stats ttl, ids per key, near threshold, repeat allowance, flag window,
throttle after, suspend after, throttle seconds, escalate (0/1), store answers (0/1), model, n,
then per image: exact digest, k, k near keys, answer.

Returns ``{refused, retry_after, state, v1...}``; each verdict is ``{seq, layer, matched,
cached}`` (``layer`` "" when unflagged, ``matched`` 0 when none, ``cached`` "" when none).
Ids are packed little-endian uint32 (``struct``), four bytes each.
"""

OBSERVE_LUA = r"""
local now = tonumber(ARGV[1])
local nb = tonumber(ARGV[2])
local bucket_ttl = tonumber(ARGV[3])
local stats_ttl = tonumber(ARGV[4])
local cap = tonumber(ARGV[5])
local near_threshold = tonumber(ARGV[6])
local allowance = tonumber(ARGV[7])
local flag_window = tonumber(ARGV[8])
local throttle_after = tonumber(ARGV[9])
local suspend_after = tonumber(ARGV[10])
local throttle_s = tonumber(ARGV[11])
local escalate = ARGV[12] == '1'
local store_answers = ARGV[13] == '1'
local model = ARGV[14]
local n = tonumber(ARGV[15])
local stats, window = KEYS[1], KEYS[2]

local state = redis.call('HGET', stats, 'state') or 'ok'
local until_ = tonumber(redis.call('HGET', stats, 'until') or '0')
if escalate then
  if state == 'suspended' then return {'suspended', '0', state} end
  if state == 'throttled' and until_ > now then
    return {'throttled', tostring(until_ - now), state}
  end
end

local function exact_key(b) return KEYS[2 + b] end
local function near_key(b) return KEYS[2 + nb + b] end
local function answer_key(b) return KEYS[2 + 2 * nb + b] end

local function append(key, field, packed)
  local ids = redis.call('HGET', key, field) or ''
  if #ids >= cap * 4 then ids = string.sub(ids, 1, 4) .. string.sub(ids, 9) end
  redis.call('HSET', key, field, ids .. packed)
end

local out = {'', '0', state}
local flagged = 0
local pos = 16
for _ = 1, n do
  local exact = ARGV[pos]
  local k = tonumber(ARGV[pos + 1])
  local near_first = pos + 2
  local answer = ARGV[near_first + k]
  pos = near_first + k + 1
  local seq = redis.call('HINCRBY', stats, 'seq', 1)
  local packed = struct.pack('<I4', seq)
  local layer, matched, copies = '', 0, 0
  for b = 1, nb do
    local ids = redis.call('HGET', exact_key(b), exact)
    if ids then
      copies = copies + #ids / 4
      matched = struct.unpack('<I4', ids, 1)
    end
  end
  if copies > 0 then
    if copies > allowance then layer = 'exact' end
  else
    local counts, seen = {}, {}
    local best, best_count = 0, 0
    for j = near_first, near_first + k - 1 do
      local key = ARGV[j]
      if not seen[key] then
        seen[key] = true
        for b = 1, nb do
          local ids = redis.call('HGET', near_key(b), key)
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
    end
    if best_count > near_threshold then layer, matched = 'near', best end
    for key in pairs(seen) do append(near_key(1), key, packed) end
  end
  append(exact_key(1), exact, packed)
  local cached = ''
  if matched > 0 then
    local field = tostring(matched)
    for b = 1, nb do
      local a = redis.call('HGET', answer_key(b), field)
      if a then cached = a break end
    end
  end
  if store_answers and copies == 0 then redis.call('HSET', answer_key(1), tostring(seq), answer) end
  if layer ~= '' then
    flagged = flagged + 1
    redis.call('HINCRBY', stats, 'flags:' .. model .. ':' .. layer, 1)
    redis.call('HSETNX', stats, 'first_flag', seq)
    redis.call('ZADD', window, now, seq .. ':' .. model)
  end
  table.insert(out, {seq, layer, matched, cached})
end

for b = 1, 3 * nb, nb do redis.call('EXPIRE', KEYS[2 + b], bucket_ttl) end
redis.call('ZREMRANGEBYSCORE', window, '-inf', now - flag_window)
local in_window = redis.call('ZCARD', window)
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
return out
"""

# The cross-caller index (shadow only), under one shared hash tag. KEYS: 1 the index's meta hash
# (``seq``), then B near-index buckets and B owner buckets (``id -> caller``), current first.
# ARGV: B, bucket ttl, ids per key, near threshold, caller, n, then per image: k, k near keys.
# Returns, per image, the other caller whose query it near-duplicates, or "".
SHARED_LUA = r"""
local nb = tonumber(ARGV[1])
local bucket_ttl = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local near_threshold = tonumber(ARGV[4])
local caller = ARGV[5]
local n = tonumber(ARGV[6])
local out = {}
local pos = 7
for _ = 1, n do
  local k = tonumber(ARGV[pos])
  local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  local packed = struct.pack('<I4', seq)
  local counts, seen = {}, {}
  local best, best_count = 0, 0
  for j = pos + 1, pos + k do
    local key = ARGV[j]
    if not seen[key] then
      seen[key] = true
      for b = 1, nb do
        local ids = redis.call('HGET', KEYS[1 + b], key)
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
  end
  pos = pos + k + 1
  local owner = ''
  if best_count > near_threshold then
    for b = 1, nb do
      local o = redis.call('HGET', KEYS[1 + nb + b], tostring(best))
      if o then owner = o break end
    end
  end
  if owner == caller then owner = '' end
  table.insert(out, owner)
  for key in pairs(seen) do
    local ids = redis.call('HGET', KEYS[2], key) or ''
    if #ids >= cap * 4 then ids = string.sub(ids, 5) end
    redis.call('HSET', KEYS[2], key, ids .. packed)
  end
  redis.call('HSET', KEYS[2 + nb], tostring(seq), caller)
end
redis.call('EXPIRE', KEYS[2], bucket_ttl)
redis.call('EXPIRE', KEYS[2 + nb], bucket_ttl)
redis.call('EXPIRE', KEYS[1], bucket_ttl)
return out
"""
