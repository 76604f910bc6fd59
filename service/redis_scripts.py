"""The Lua scripts of :class:`~service.redis_counter.RedisCounter`: a coalesced charge (budget
check and count in one step, per charge) and an idempotent refund."""

# Charges applied in order, three KEYS each: usage hash, budget key, charge token (one caller's
# keys: one slot). ARGV: token ttl seconds, then three per charge: model, n, default budget
# ('' = none).
# Returns three integers per charge: allowed (0/1), the caller's total after it, budget (-1 none).
CHARGE_LUA = """
local out = {}
local ttl = tonumber(ARGV[1])
for i = 0, #KEYS / 3 - 1 do
  local usage_key, budget_key, token_key = KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3]
  local model = ARGV[3 * i + 2]
  local n, default_budget = tonumber(ARGV[3 * i + 3]), ARGV[3 * i + 4]
  local allowed, used, b
  local done = redis.call('GET', token_key)
  if done then
    local a, u, d = string.match(done, '^(%-?%d+),(%-?%d+),(%-?%d+)$')
    allowed, used, b = tonumber(a), tonumber(u), tonumber(d)
  else
    local budget = redis.call('GET', budget_key) or default_budget
    used = 0
    for _, count in ipairs(redis.call('HVALS', usage_key)) do
      used = used + tonumber(count)
    end
    allowed = 1
    if budget ~= '' and used + n > tonumber(budget) then
      allowed = 0
    else
      redis.call('HINCRBY', usage_key, model, n)
      used = used + n
    end
    b = -1
    if budget ~= '' then b = tonumber(budget) end
    redis.call('SET', token_key, string.format('%d,%d,%d', allowed, used, b), 'EX', ttl)
  end
  out[#out + 1] = allowed
  out[#out + 1] = used
  out[#out + 1] = b
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
