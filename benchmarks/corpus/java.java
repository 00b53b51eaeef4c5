package com.example.orders;

import java.math.BigDecimal;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

public class OrderService {
    private final OrderRepository repository;
    private final PaymentGateway payments;

    public OrderService(OrderRepository repository, PaymentGateway payments) {
        this.repository = repository;
        this.payments = payments;
    }

    public Order create(String customerId, List<LineItem> items) {
        if (items == null || items.isEmpty()) {
            throw new IllegalArgumentException("an order needs at least one item");
        }
        Order order = new Order(customerId, new ArrayList<>(items));
        order.setTotal(total(items));
        return repository.save(order);
    }

    public BigDecimal total(List<LineItem> items) {
        BigDecimal sum = BigDecimal.ZERO;
        for (LineItem item : items) {
            sum = sum.add(item.getPrice().multiply(BigDecimal.valueOf(item.getQuantity())));
        }
        return sum;
    }

    public Optional<Order> find(long id) {
        return repository.findById(id);
    }

    public void pay(long id) {
        Order order = repository.findById(id)
                .orElseThrow(() -> new IllegalStateException("no order " + id));
        if (order.isPaid()) {
            return;
        }
        try {
            payments.charge(order.getCustomerId(), order.getTotal());
            order.setPaid(true);
        } catch (PaymentException e) {
            order.setFailureReason(e.getMessage());
        } finally {
            repository.save(order);
        }
    }
}
