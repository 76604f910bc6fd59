"""The Lua scripts of :class:`~service.accounting.redis_counter.RedisCounter`: a coalesced
charge (budget check and count in one step, per charge, behind the detection gate) and an
idempotent refund."""

# Charges applied in order, four KEYS each: usage hash, budget key, charge token, the caller's
# detection state hash (one caller's keys: one slot). ARGV: token ttl seconds, then four per
# charge: model, n, default budget ('' = none), gate time ('' = no gate).
# With a gate time, a caller that detection has suspended, or throttled past that time, is
# refused before its budget is read (issue 28: the gate and the charge in one round trip; the
# states are written by ``service.detection.redis_lua``).
# Returns four integers per charge: outcome (1 charged, 0 over budget, 2 throttled, 3
# suspended), the caller's total after it, budget (-1 none), milliseconds until a throttle ends.
CHARGE_LUA = """
local out = {}
local ttl = tonumber(ARGV[1])
for i = 0, #KEYS / 4 - 1 do
  local usage_key, budget_key = KEYS[4 * i + 1], KEYS[4 * i + 2]
  local token_key, gate_key = KEYS[4 * i + 3], KEYS[4 * i + 4]
  local model = ARGV[4 * i + 2]
  local n, default_budget, gate = tonumber(ARGV[4 * i + 3]), ARGV[4 * i + 4], ARGV[4 * i + 5]
  local allowed, used, b, wait = 1, 0, -1, 0
  local done = redis.call('GET', token_key)
  if done then
    local a, u, d, w = string.match(done, '^(%-?%d+),(%-?%d+),(%-?%d+),?(%d*)$')
    allowed, used, b, wait = tonumber(a), tonumber(u), tonumber(d), tonumber(w) or 0
  else
    if gate ~= '' then
      local state = redis.call('HMGET', gate_key, 'state', 'until')
      if state[1] == 'suspended' then
        allowed = 3
      elseif state[1] == 'throttled' and tonumber(state[2] or '0') > tonumber(gate) then
        allowed, wait = 2, math.ceil(1000 * (tonumber(state[2]) - tonumber(gate)))
      end
    end
    for _, count in ipairs(redis.call('HVALS', usage_key)) do
      used = used + tonumber(count)
    end
    local budget = redis.call('GET', budget_key) or default_budget
    if budget ~= '' then b = tonumber(budget) end
    if allowed == 1 then
      if budget ~= '' and used + n > b then
        allowed = 0
      else
        redis.call('HINCRBY', usage_key, model, n)
        used = used + n
      end
    end
    redis.call('SET', token_key, string.format('%d,%d,%d,%d', allowed, used, b, wait), 'EX', ttl)
  end
  out[#out + 1] = allowed
  out[#out + 1] = used
  out[#out + 1] = b
  out[#out + 1] = wait
end
return out
"""
MAX_CHARGES_PER_CALL = 256  # bounds one script's run time (Redis runs scripts alone)

# KEYS: usage hash, refund token; ARGV: model, n, token ttl seconds. Never takes a count below
# zero; a retried refund (same token) is applied once.
REFUND_LUA = """
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', tonumber(ARGV[3])) then return 0 end
local count = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local n = math.min(count, tonumber(ARGV[2]))
if n > 0 then redis.call('HINCRBY', KEYS[1], ARGV[1], -n) end
return n
"""
