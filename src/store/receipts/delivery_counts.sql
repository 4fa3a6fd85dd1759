-- Messages whose final delivery state the carrier reported since $1: delivered, undelivered. Both
-- backends run it as it is.
SELECT count(*) FILTER (WHERE delivery_status = 'delivered'),
       count(*) FILTER (WHERE delivery_status = 'undelivered')
  FROM messages
 WHERE delivery_status IN ('delivered', 'undelivered') AND delivery_reported_at >= $1
