-- The order a delivery's sale was reserved against (NULL: none). The router settles an order
-- share only for deliveries that hold one, instead of looking for a charge on every result.
ALTER TABLE deliveries ADD COLUMN order_id text;
UPDATE deliveries d SET order_id = c.order_id FROM order_charges c WHERE c.delivery_id = d.id;
